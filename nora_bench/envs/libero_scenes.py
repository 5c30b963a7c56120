"""Reference scenes: the fixture placement the published LIBERO scripts show for each trial.

LIBERO places its fixtures (cabinets, stoves, racks: model body poses, not part of the fixed init
states) from NumPy's global RNG at every reset. The published OpenVLA / NORA scripts create one env
per task, call `env.seed(0)` right after, then reset once per trial in order (openpi: seed 7), so
trial i shows the placement that follows the seed and i + 1 resets.

`SceneSeeder` reproduces that for any trial, in any order, on any worker: it seeds the RNG, replays
the resets before the episode's own (unrendered soft resets; measured to consume the RNG exactly as
the published hard resets do, and steps draw nothing), and keeps the RNG state after every reset it
has seen so that trials run in order cost no replay at all. Mode `episode` is the older per-episode
seeding (seed from the run seed and the episode key): other scenes than the published ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from nora_bench import UserError

REFERENCE = "reference"  # the published scripts' scenes: seed, then trial + 1 resets
EPISODE = "episode"  # NumPy's RNG seeded from the episode seed before the reset
SCENE_MODES = (REFERENCE, EPISODE)
# The seed the published scripts pass to env.seed(): OpenVLA and NORA 0, openpi 7.
PUBLISHED_SCENE_SEEDS = {"openvla": 0, "nora": 0, "openpi": 7}


def check_scene(mode: str, seed: int) -> None:
    if mode not in SCENE_MODES:
        raise UserError(f"unknown scene mode {mode!r}: use reference (the published scripts' scenes) or episode")
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise UserError(f"scene seed {seed!r} must be an integer in 0..2**32-1 (the published scripts use 0; openpi 7)")


class SceneSeeder:
    """Seeds NumPy's global RNG before an env's reset so that the reset places the episode's scene.

    One per built env (a rebuilt env starts from a fresh cache). `reset(render_off)` must perform one
    reset of that env without rendering.
    """

    def __init__(self, reset: Callable[[], Any]):
        self._reset = reset
        self._states: dict[tuple[int, int], tuple] = {}  # (seed, resets done) -> RNG state after them
        self.replayed = 0  # resets replayed for the last episode (their time is in the reset's timing)

    def before_reset(self, mode: str, scene_seed: int, trial: int, episode_seed: int) -> None:
        """Put the RNG where the published script has it right before trial `trial`'s reset."""
        self.replayed = 0
        if mode == EPISODE:
            np.random.seed(episode_seed % 2**32)
            return
        done = max((k for s, k in self._states if s == scene_seed and k <= trial), default=None)
        if done is None:
            np.random.seed(scene_seed)
            done = 0
        else:
            np.random.set_state(self._states[(scene_seed, done)])
        while done < trial:
            self._reset()
            done += 1
            self.replayed += 1
            self._states[(scene_seed, done)] = np.random.get_state()

    def after_reset(self, mode: str, scene_seed: int, trial: int) -> None:
        """Remember the RNG state after trial `trial`'s reset (the next trial starts there)."""
        if mode == REFERENCE:
            self._states[(scene_seed, trial + 1)] = np.random.get_state()


def fixture_poses(sim_env) -> dict[str, list[float]]:
    """Each fixture's placed pose: model body position (3) and quaternion (w, x, y, z)."""
    model = sim_env.sim.model
    out = {}
    for name in sorted(sim_env.fixtures_dict):
        body = model.body_name2id(sim_env.fixtures_dict[name].root_body)
        out[name] = [float(x) for x in np.concatenate([model.body_pos[body], model.body_quat[body]])]
    return out


def scene_fingerprint(poses: dict[str, list[float]]) -> str:
    """A short hash of the exact fixture poses: equal fingerprints = the same scene."""
    h = hashlib.sha1()
    for name in sorted(poses):
        h.update(name.encode())
        h.update(np.asarray(poses[name], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class SceneRecord:
    """What an episode record says about its scene."""

    mode: str
    seed: int
    fingerprint: str
    fixtures: dict[str, list[float]]
    replayed_resets: int

    @classmethod
    def read(cls, sim_env, mode: str, seed: int, seeder: SceneSeeder) -> "SceneRecord":
        poses = fixture_poses(sim_env)
        return cls(mode=mode, seed=seed, fingerprint=scene_fingerprint(poses),
                   fixtures={k: [round(x, 6) for x in v] for k, v in poses.items()},
                   replayed_resets=seeder.replayed)
