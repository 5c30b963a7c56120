"""Suite and policy presets (YAML) and the resolved configuration of a run."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nora_bench import UserError
from nora_bench.checks import check_types_of

STEP_UNITS = ("env_steps", "queries")


def _preset_files(kind: str) -> dict[str, Path]:
    folder = resources.files("nora_bench.presets") / kind
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"malformed YAML in {path}: {e}".replace("\n", " ")) from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a YAML text file (not UTF-8: byte {e.start} is {e.object[e.start:e.start + 1]!r})") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise UserError(f"malformed preset {path}: expected a mapping at the top level")
    return data


# Names become parts of paths (the run folder, episode keys, video files): plain names only.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_name(name: Any, what: str, source: str) -> str:
    """`name` if it is safe in a path (no separator, no `..`, no markup), else a UserError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{what} name {name!r} in {source} cannot name a folder: use letters, digits and . _ + - "
                        "(starting with a letter or digit)")
    return name


def check_types(cls, data: dict, source: str) -> None:
    """A UserError naming the first key of `data` whose value does not have the type `cls` declares
    (int, float, str, bool, list, dict, tuple and `X | None` fields; others are not checked)."""
    check_types_of(typing.get_type_hints(cls), data, f"malformed {source}")


def _unknown(what: str, name: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"unknown {what} {name!r}{hint}; known: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class SuiteSpec:
    """A suite preset: which env and tasks, how many trials, step limits. See suites/*.yaml."""

    name: str
    env: str
    benchmark: str
    num_tasks: int
    max_steps: int
    step_unit: str = "env_steps"
    num_steps_wait: int = 10
    trials: int = 50
    max_trials: int = 50  # fixed init states available per task
    tasks: list[int] | None = None  # None = all
    camera_size: int = 256
    distractors: int = 0
    distractor_names: list[str] = field(default_factory=list)  # fixed distractor objects (else sampled)
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    env_options: dict[str, Any] = field(default_factory=dict)
    # Per-task facts for suites whose tasks are not defined by a simulator benchmark (the real
    # WidowX): {name, instruction, category, objects, ...}; entry i is task i.
    task_list: list[dict[str, Any]] = field(default_factory=list)
    # Robustness suites (suites/families/): the perturbation family and level, and the suite they perturb.
    # A preset suite is its own base ("base" family); envs/libero_families.py fills these for registered ones.
    family: str = ""
    level: str = ""
    base_suite: str = ""
    tasks_correspond: bool = True  # task i is task i of base_suite (same goal)
    unavailable_tasks: dict[int, str] = field(default_factory=dict)  # task id -> why it cannot run

    def perturbation(self, distractors: int) -> dict[str, str]:
        """The record fields that place a run in a robustness table: perturbation family, level and
        base suite. The --distractors ablation is one more family ("distractors", level = the count)."""
        family, level = self.family or "base", self.level
        if distractors:
            family = "distractors" if family == "base" else f"{family}+distractors"
            level = f"{level}+{distractors}" if level else str(distractors)
        return {"family": family, "level": level, "base_suite": self.base_suite or self.benchmark or self.name}

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "SuiteSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - names)
        if extra:
            raise UserError(f"malformed suite {source}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(names))}")
        check_types(cls, data, f"suite {source}")
        try:
            spec = cls(**data)
        except TypeError as e:
            raise UserError(f"malformed suite {source}: {e}") from None
        check_name(spec.name, "suite", source)
        if spec.task_list:
            if len(spec.task_list) != spec.num_tasks:
                raise UserError(f"malformed suite {source}: num_tasks is {spec.num_tasks} but task_list has "
                                f"{len(spec.task_list)} entries")
            for i, t in enumerate(spec.task_list):
                if not isinstance(t, dict) or not t.get("instruction"):
                    raise UserError(f"malformed suite {source}: task_list entry {i} needs an instruction")

        if spec.step_unit not in STEP_UNITS:
            raise UserError(f"malformed suite {source}: step_unit must be one of {STEP_UNITS}")
        if spec.distractor_names:
            from nora_bench.envs.distractors import check_suite

            check_suite(spec, source)
        return spec


# Keys a preset never takes from the one it `extends:` (they name and describe the file itself).
NOT_INHERITED = ("name", "aliases", "description")


def with_extends(data: dict, source: str, load_raw, chain: tuple[str, ...] = ()) -> dict:
    """`data` merged over the preset it names in `extends:` (recursively; its own keys win, except
    NOT_INHERITED ones, which are never taken from the base). `load_raw(name) -> (dict, source)`."""
    base_name = data.get("extends")
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise UserError(f"malformed preset {source}: extends is {base_name!r}, expected the name of another preset")
    if base_name in chain:
        raise UserError(f"malformed preset {source}: extends {' -> '.join(chain + (base_name,))} is a cycle")
    base, base_source = load_raw(base_name)
    base = with_extends(base, base_source, load_raw, chain + (base_name,))
    merged = {k: v for k, v in base.items() if k not in NOT_INHERITED}
    merged.update({k: v for k, v in data.items() if k != "extends"})
    return merged


def _raw_preset(kind: str, what: str):
    def load_raw(name: str) -> tuple[dict, str]:
        files = _preset_files(kind)
        if name not in files:
            raise _unknown(f"{what} to extend", name, list(files))
        return _read_yaml(files[name]), str(files[name])
    return load_raw


def suite_names() -> list[str]:
    return sorted(_preset_files("suites"))


def preset_benchmarks() -> set[str]:
    """Simulator benchmarks that a suite preset (suites/*.yaml) is named after."""
    return {stem for stem in _preset_files("suites")} | {
        str(_read_yaml(p).get("benchmark")) for p in _preset_files("suites").values()}


def load_suite(name: str) -> SuiteSpec:
    """A suite by preset name, alias (e.g. libero_long), registered benchmark of a suite family
    (e.g. libero_spatial_lan, see suites/families/) or path to a YAML file."""
    path = Path(name)
    if name.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise UserError(f"suite file {name} does not exist")
        return SuiteSpec.from_dict(with_extends(_read_yaml(path), str(path), _raw_preset("suites", "suite")),
                                   str(path))
    files = _preset_files("suites")
    for stem, p in sorted(files.items()):
        data = _read_yaml(p)
        if stem == name or name in data.get("aliases", []):
            return SuiteSpec.from_dict(with_extends(data, str(p), _raw_preset("suites", "suite")), str(p))
    from nora_bench.envs.libero_families import suite_dict

    registered = suite_dict(name)
    if registered is not None:
        return SuiteSpec.from_dict(registered, f"suite family entry {name}")
    from nora_bench.envs.libero_families import registered_names

    aliases = [a for p in files.values() for a in _read_yaml(p).get("aliases", [])]
    close = difflib.get_close_matches(name, list(files) + aliases + registered_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown suite {name!r}{hint}; presets: {', '.join(sorted(files))}; "
                    "`nora-bench suites` lists them and the robustness suites of each family")


def policy_names() -> list[str]:
    return sorted(_preset_files("policies"))


def load_policy_preset(name: str) -> dict:
    """A policy preset by name or YAML path: a dict with at least `kind` (see policies/*.yaml)."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"policy file {name} does not exist")
    else:
        files = _preset_files("policies")
        if name not in files:
            raise _unknown("policy preset", name, list(files))
        path = files[name]
    data = with_extends(_read_yaml(path), str(path), _raw_preset("policies", "policy preset"))
    if "kind" not in data:
        raise UserError(f"malformed policy preset {path}: missing key 'kind'")
    data.setdefault("name", path.stem)
    check_name(data["name"], "policy", str(path))
    return data


def parse_index_list(text: str | None, limit: int, what: str, fix: str) -> list[int] | None:
    """'0,2,5-7' -> [0, 2, 5, 6, 7], each checked against [0, limit). A range runs upwards
    (`5-2` is refused, never read as empty or as everything)."""
    if text is None or str(text).strip() in ("", "all"):
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise UserError(f"cannot read {what} range {part!r} in {text!r}: a range runs upwards "
                                    f"(write {hi}-{lo})")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UserError(f"cannot read {what} {text!r}: use a list like 0,2,5-7") from None
    bad = [i for i in out if not 0 <= i < limit]
    if bad:
        raise UserError(f"{what} {bad[0]} is out of range: {fix}")
    return sorted(set(out))


@dataclass
class RunConfig:
    """Everything that decides the results of a run (compared on resume), nothing about how it runs."""

    suite: dict
    policy: dict
    tasks: list[int]
    trials: list[int]
    seed: int = 7
    chunk_exec: str = "all"
    max_steps: int = 0
    step_unit: str = "env_steps"
    num_steps_wait: int = 10
    distractors: int = 0
    video: bool = True
    video_wrist: bool = False
    video_frames: str = "steps"  # "steps" (every env step) or "queries"
    scene: str = "reference"  # LIBERO fixture placement: the published scripts' (reference) or per episode
    scene_seed: int = 0  # the published scripts' env.seed(): OpenVLA/NORA 0, openpi 7
    success_check: str = "any_step"  # any_step | chunk_end (NORA's LIBERO script): episode.SUCCESS_CHECKS
    recipe: str | None = None  # the repro recipe the run follows (nora_bench/recipes.py), if any

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        return cls(**data)

    @classmethod
    def resolve(cls, *, suite: str, policy: str = "zero", tasks: str | None = None, trials: str | int | None = None,
                seed: int = 7, chunk_exec: str | None = None, max_steps: int | None = None,
                step_unit: str | None = None, distractors: int | None = None, video: bool = True,
                video_wrist: bool = False, video_frames: str = "steps", scene: str = "reference",
                scene_seed: int = 0, success_check: str = "any_step") -> "RunConfig":
        """A run from preset names (or YAML paths) and the command line's choices (None: the presets').

        Checks everything that can be checked before an episode runs, the policy's needs against
        the env's declared specs included; raises UserError naming the problem and the fix.
        """
        from nora_bench.chunking import ChunkRule

        s = load_suite(suite)
        p = load_policy_preset(policy)
        check_compatible(s.env, p)
        trials = None if trials is None else str(trials)
        task_ids = parse_index_list(tasks, s.num_tasks, "task",
                                    f"{s.name} has tasks 0-{s.num_tasks - 1}") or (s.tasks or list(range(s.num_tasks)))
        blocked = [t for t in task_ids if t in s.unavailable_tasks]
        if blocked:
            raise UserError(f"{s.name} task {blocked[0]} cannot run ({s.unavailable_tasks[blocked[0]]}): pick from "
                            f"{','.join(map(str, [t for t in range(s.num_tasks) if t not in s.unavailable_tasks]))}")
        if trials is not None and trials.isdigit():
            n = int(trials)
            if not 1 <= n <= s.max_trials:
                raise UserError(f"--trials {n} is out of range: {s.name} has {s.max_trials} fixed init states per task "
                                f"(use 1-{s.max_trials}, or a list like 0,3,7)")
            trial_ids = list(range(n))
        else:
            trial_ids = parse_index_list(trials, s.max_trials, "trial",
                                         f"{s.name} has {s.max_trials} fixed init states per task "
                                         f"(0-{s.max_trials - 1})") or list(range(s.trials))
        unit = step_unit or s.step_unit
        if unit not in STEP_UNITS:
            raise UserError(f"unknown --step-unit {unit!r}: use one of {', '.join(STEP_UNITS)}")
        if video_frames not in ("steps", "queries"):
            raise UserError(f"unknown --video-frames {video_frames!r}: use steps or queries")
        rule = ChunkRule.parse(chunk_exec or p.get("chunk_exec", "all"))
        if max_steps is not None and max_steps < 1:
            raise UserError("--max-steps must be at least 1")
        n_distractors = s.distractors if distractors is None else distractors
        if n_distractors < 0:
            raise UserError("--distractors must be >= 0")
        if s.distractor_names and n_distractors not in (0, len(s.distractor_names)):
            raise UserError(f"--distractors {n_distractors} does not match suite {s.name}'s "
                            f"{len(s.distractor_names)} distractor_names: leave out --distractors or use a suite "
                            "without a name list")
        n_distractors = n_distractors or len(s.distractor_names)
        from nora_bench.envs.libero_scenes import check_scene

        check_scene(scene, scene_seed)
        from nora_bench.episode import SUCCESS_CHECKS

        if success_check not in SUCCESS_CHECKS:
            raise UserError(f"unknown --success-check {success_check!r}: use any_step (success at any env step) or "
                            f"chunk_end (only after a whole chunk, NORA's LIBERO script)")
        return cls(suite=dataclasses.asdict(s), policy=p, tasks=task_ids, trials=trial_ids, seed=seed,
                   chunk_exec=str(rule), max_steps=max_steps or s.max_steps, step_unit=unit,
                   num_steps_wait=s.num_steps_wait, distractors=n_distractors, video=video,
                   video_wrist=video_wrist, video_frames=video_frames, scene=scene, scene_seed=scene_seed,
                   success_check=success_check)

    @property
    def suite_spec(self) -> SuiteSpec:
        return SuiteSpec(**self.suite)


def check_compatible(env: str, preset: dict) -> None:
    """Refuse, in one line, a policy that needs a camera, state or action convention the env lacks."""
    from nora_bench.envs import action_spec
    from nora_bench.policies import preset_requirements
    from nora_bench.types import incompatibility

    problem = incompatibility(preset_requirements(preset), action_spec(env), env)
    if problem:
        raise UserError(f"policy preset {preset.get('name')!r} cannot run on a {env} suite: {problem}")


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} (recorded) != {b!r} (now)")
    return lines
