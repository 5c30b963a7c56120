# `make demo` and `make test` each set up what they need first (scripts/setup.sh).
.PHONY: setup setup-test demo test lint bench

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

demo: setup
	.venv/bin/nora-bench run libero_spatial --policy scripted --tasks 0,1 --trials 2 --workers 2

test: setup-test lint
	.venv/bin/python -m pytest -v --durations=30 tests

# Lint and import order (ruff), layers and no import cycles (import-linter, pyproject.toml): part of `make test`.
lint: setup-test
	.venv/bin/ruff check nora_bench tests bench
	PYTHONPATH=$(CURDIR) .venv/bin/lint-imports

bench: setup
	.venv/bin/python bench/run_all.py
