"""Repro recipes: everything a published success rate depends on, as data (nora_bench/data/recipes/*.yaml).

A recipe names a suite and a policy preset and pins run fields (chunk rule, step limit and unit,
success check, scene seed, init states), policy fields (checkpoint, FAST+ horizon, un-normalization
source and key, image pipeline, decode fallback, dtype, attention) and simulator versions, each with
its source; plus the published rate. `nora-bench run --recipe NAME` runs it; `verify` checks a run
folder against it: per suite an exact binomial test and the Wilson interval against the published
rate, and every field in which the run deviated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nora_bench import UserError

# A run's p-value below this: the run is not consistent with the published rate.
ALPHA = 0.05
# Preset spellings of one dtype (policies/nora.py DTYPES): compared by canonical name.
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _folder() -> Path:
    return Path(str(resources.files("nora_bench") / "data" / "recipes"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in _folder().glob("*.yaml") if not p.name.startswith("_"))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(name: str, seen: tuple[str, ...] = ()) -> dict:
    path = Path(name) if name.endswith((".yaml", ".yml")) else _folder() / f"{name}.yaml"
    if not path.is_file():
        from nora_bench.config import _unknown

        raise _unknown("recipe", name, recipe_names())
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UserError(f"malformed recipe {path}: expected a mapping")
    parent = data.pop("extends", None)
    own_name = data.get("name", path.stem)
    if parent:
        if parent in seen:
            raise UserError(f"recipe {name}: 'extends' loops through {parent}")
        data = _merge(_read(parent, seen + (name,)), data)
    data["name"] = own_name
    return data


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    suite: str
    policy: str
    run: dict[str, Any] = field(default_factory=dict)
    policy_fields: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)  # rate (0..1), episodes, source
    sources: dict[str, str] = field(default_factory=dict)

    def source(self, key: str) -> str:
        return self.sources.get(key, self.sources.get("script", ""))


def load_recipe(name: str) -> Recipe:
    data = _read(name)
    try:
        return Recipe(**data)
    except TypeError as e:
        raise UserError(f"malformed recipe {name}: {e}") from None


# -- what a run pinned vs the recipe ------------------------------------------------------------------
def _expected_run_value(key: str, value: Any, config: dict) -> Any:
    if key == "tasks" and value == "all":
        return list(range(int(config["suite"]["num_tasks"])))
    if key == "trials" and isinstance(value, int):
        return list(range(value))
    return value


def deviations(recipe: Recipe, config: dict, environment: dict) -> list[str]:
    """Every field in which a run (its config.yaml and environment.json) differs from the recipe."""
    out = []
    if config["suite"].get("name") != recipe.suite:
        out.append(f"suite: {config['suite'].get('name')} (run) != {recipe.suite} (recipe)")
    for key, want in recipe.run.items():
        want = _expected_run_value(key, want, config)
        got = config.get(key, config["suite"].get(key, "<missing>"))
        if got != want:
            out.append(f"{key}: {_short(got)} (run) != {_short(want)} (recipe; {recipe.source(key)})")
    policy = config.get("policy", {})
    resolved = policy.get("resolved", {})
    for key, want in recipe.policy_fields.items():
        got = policy.get(key)
        if key in ("dtype", "attn") and key in resolved:
            got = resolved[key]  # what `auto` became on the machine
        if key == "dtype":
            got, want = _DTYPES.get(str(got), got), _DTYPES.get(str(want), want)
        if got != want:
            out.append(f"{key}: {got!r} (run) != {want!r} (recipe; {recipe.source(key)})")
    versions = environment.get("versions", {})
    for pkg, want in recipe.versions.items():
        if versions.get(pkg) != str(want):
            out.append(f"{pkg}: {versions.get(pkg)} (run) != {want} (recipe; {recipe.source('versions')})")
    return out


def _short(v: Any) -> str:
    if isinstance(v, list) and len(v) > 6 and v == list(range(v[0], v[0] + len(v))):
        return f"{v[0]}..{v[-1]}"
    return repr(v)


# -- the published rate vs the run's ---------------------------------------------------------------------
@dataclass(frozen=True)
class SuiteVerdict:
    suite: str
    episodes: int
    successes: int
    rate: float
    ci_low: float
    ci_high: float
    published: float
    p_value: float

    @property
    def consistent(self) -> bool:
        return self.p_value >= ALPHA


def verdict(suite: str, successes: int, episodes: int, published: float) -> SuiteVerdict:
    """Exact two-sided binomial test of successes/episodes against the published rate, and the Wilson interval."""
    from scipy import stats

    from nora_bench.results import wilson_interval

    lo, hi = wilson_interval(successes, episodes)
    p = float(stats.binomtest(successes, episodes, published).pvalue) if episodes else math.nan
    return SuiteVerdict(suite, episodes, successes, successes / episodes if episodes else math.nan, lo, hi,
                        published, p)


def verify(run_dir: str | Path, recipe_name: str | None = None) -> tuple[Recipe, list[SuiteVerdict], list[str]]:
    """(recipe, per-suite verdicts, deviations) of a run folder; the recipe is the run's own unless named."""
    from nora_bench.results import load
    from nora_bench.run.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.exists():
        raise UserError(f"{run_dir} is not a nora-bench run folder (no {RunDir.CONFIG}): pass the folder `nora-bench run` wrote")
    config = rd.read_config()
    name = recipe_name or config.get("recipe")
    if not name:
        raise UserError(f"{run_dir} was not run with --recipe: name the recipe to verify it against "
                        f"(nora-bench verify {run_dir} --recipe NAME; recipes: {', '.join(recipe_names())})")
    recipe = load_recipe(name)
    df = load(run_dir)
    verdicts = []
    if not df.empty:
        done = df[df["success"].notna()]  # errored episodes have no outcome: neither success nor failure
        for suite, g in done.groupby("suite"):
            verdicts.append(verdict(str(suite), int(g["success"].astype(bool).sum()), len(g),
                                    float(recipe.published["rate"])))
    return recipe, verdicts, deviations(recipe, config, rd.read_environment())
