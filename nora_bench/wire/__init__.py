"""Wire formats of the policy-server protocols nora-bench speaks (client and server side)."""
