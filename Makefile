# `make demo` and `make test` each set up what they need first (scripts/setup.sh).
.PHONY: setup setup-test demo test bench

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

demo: setup
	.venv/bin/nora-bench run libero_spatial --policy scripted --tasks 0,1 --trials 2 --workers 2

test: setup-test
	.venv/bin/python -m pytest -v tests

bench: setup
	.venv/bin/python bench/run_all.py
