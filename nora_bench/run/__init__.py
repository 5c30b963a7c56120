"""Running evaluations: the run folder, Ray env workers and the scheduler."""
