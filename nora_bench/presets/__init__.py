"""Suite and policy presets shipped inside the package (see suites/ and policies/ at the repo top level)."""
