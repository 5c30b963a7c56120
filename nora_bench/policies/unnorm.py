"""Action un-normalization bounds: a = 0.5 * (a_norm + 1) * (high - low) + low.

Sources (the `norm_stats` field of a NORA preset):
- ``checkpoint``: the checkpoint's own ``norm_stats.json`` (OpenVLA layout: key -> action -> q01/q99);
- ``nora_libero``: the fixed bounds NORA's published LIBERO script uses (package data);
- ``nora15_libero``: NORA-1.5's LIBERO statistics, OpenVLA-OFT's ``{suite}_no_noops`` q01/q99 and mask
  (package data, OpenVLA layout; see its ``_source``);
- ``hub:OWNER/NAME``: ``norm_stats.json`` of a hub repo (NORA's scripts read declare-lab/nora's);
- a path to a JSON file, either OpenVLA layout (q01/q99 per key) or LeRobot layout
  (feature -> min/max, e.g. meta/stats.json; the key names the feature, default ``action``).

Like the published NORA code, `unnormalize` maps every dimension, the gripper included: that code
computes a mask and never applies it. NORA-1.5's code applies it: `unnormalize_masked` leaves the
dimensions whose mask is False (the gripper, in OpenVLA-layout statistics) as the model gave them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from nora_bench import UserError

NORM_STATS_FILE = "norm_stats.json"
PACKAGED = {"nora15_libero": "nora15_libero_stats.json"}  # OpenVLA-layout statistics shipped as package data
SOURCES_HELP = "use checkpoint, nora_libero, nora15_libero, hub:OWNER/NAME or a path to a norm_stats.json / LeRobot stats.json"


@dataclass(frozen=True)
class Bounds:
    low: np.ndarray
    high: np.ndarray
    source: str  # where they came from, for the record
    mask: np.ndarray | None = None  # OpenVLA-layout `mask`: False = not normalized in training

    def unnormalize(self, a_norm: np.ndarray) -> np.ndarray:
        a = np.asarray(a_norm, dtype=np.float64)
        if a.shape[-1] != len(self.low):
            raise ValueError(f"action has {a.shape[-1]} dims, the bounds have {len(self.low)}")
        return 0.5 * (a + 1.0) * (self.high - self.low) + self.low

    def unnormalize_masked(self, a_norm: np.ndarray) -> np.ndarray:
        """As NORA-1.5's `unnormalize_action`: masked-out dims pass through (no mask: all dims mapped)."""
        a = np.asarray(a_norm, dtype=np.float64)
        mask = np.ones(len(self.low), dtype=bool) if self.mask is None else self.mask
        return np.where(mask, self.unnormalize(a), a)


def nora_libero_bounds() -> dict:
    text = (resources.files("nora_bench") / "data" / "nora_libero_action_bounds.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def load_bounds(source: str, key: str | None, checkpoint_dir: Path | None = None) -> Bounds:
    """The bounds for `key` from `source` (see the module docstring)."""
    source = str(source)
    if source == "nora_libero":
        table = nora_libero_bounds()
        k = _pick(key, table, "the NORA LIBERO bounds")
        return Bounds(np.asarray(table[k]["low"], float), np.asarray(table[k]["high"], float), f"nora_libero:{k}")
    if source in PACKAGED:
        with resources.as_file(resources.files("nora_bench") / "data" / PACKAGED[source]) as path:
            bounds = _from_file(Path(path), key)
        return Bounds(bounds.low, bounds.high, f"{source}:{bounds.source.rsplit(':', 1)[-1]}", bounds.mask)
    if source == "checkpoint":
        if checkpoint_dir is None or not (checkpoint_dir / NORM_STATS_FILE).is_file():
            raise UserError(f"the checkpoint {checkpoint_dir} has no {NORM_STATS_FILE}: set norm_stats in the preset "
                            f"({SOURCES_HELP})")
        path = checkpoint_dir / NORM_STATS_FILE
    elif source.startswith("hub:"):
        from nora_bench.policies.checkpoints import resolve_folder

        folder = resolve_folder(source[4:], "norm stats repo", "set norm_stats to a local file", [NORM_STATS_FILE])
        path = folder / NORM_STATS_FILE
        if not path.is_file():
            raise UserError(f"the hub repo {source[4:]!r} has no {NORM_STATS_FILE}; {SOURCES_HELP}")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"unknown norm_stats source {source!r} (no such file); {SOURCES_HELP}")
    return _from_file(path, key)


def _from_file(path: Path, key: str | None) -> Bounds:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"malformed JSON in {path}: {e}") from None
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_source" notes
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path} holds no statistics")
    # LeRobot layout: feature -> {min, max, ...} at the top level.
    if any(isinstance(v, dict) and {"min", "max"} <= set(v) for v in data.values()):
        features = {k: v for k, v in data.items() if isinstance(v, dict) and {"min", "max"} <= set(v)}
        k = _pick(key or "action", features, f"the LeRobot stats {path}")
        return Bounds(np.asarray(features[k]["min"], float).ravel(), np.asarray(features[k]["max"], float).ravel(),
                      f"lerobot:{path}:{k}")
    # OpenVLA / NORA layout: dataset key -> {"action": {q01, q99, ...}}.
    k = _pick(key, data, f"the norm stats {path}")
    action = data[k].get("action", data[k]) if isinstance(data[k], dict) else None
    if not isinstance(action, dict) or not {"q01", "q99"} <= set(action):
        raise UserError(f"{path}: entry {k!r} has no action q01/q99 statistics")
    mask = np.asarray(action["mask"], dtype=bool) if "mask" in action else None
    if mask is not None and mask.shape != np.shape(action["q01"]):
        raise UserError(f"{path}: entry {k!r} has a mask of {mask.size} dims for {len(action['q01'])} action dims")
    return Bounds(np.asarray(action["q01"], float), np.asarray(action["q99"], float), f"{path}:{k}", mask)


def _pick(key: str | None, table: dict, what: str) -> str:
    if key is None:
        if len(table) == 1:
            return next(iter(table))
        raise UserError(f"{what} hold several keys: set unnorm_key to one of {', '.join(sorted(table))}")
    if key not in table:
        raise UserError(f"unknown unnorm_key {key!r} in {what}; available: {', '.join(sorted(table))}")
    return key
