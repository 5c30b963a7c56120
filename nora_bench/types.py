"""The data every layer shares: what a policy sees, answers and needs, what an env declares.

A leaf module: it imports the standard library and NumPy only, never anything of nora-bench, so
that envs, policies, the episode protocol and a remote policy's wire code can all import it
without cycles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class InfrastructureError(RuntimeError):
    """The machinery failed (a policy actor or server died), not the policy: the episode is re-run.
    A policy may raise it (e.g. a remote policy that lost its server)."""


@dataclass
class Observation:
    """What a policy sees at a query: camera images (HxWx3 uint8), the instruction, optional state."""

    instruction: str
    episode: str = ""  # the episode's key, so a policy serving many episodes can keep state per episode
    # Keyed by the env's canonical camera names (ActionSpec.cameras).
    images: dict[str, np.ndarray] = field(default_factory=dict)
    # Privileged simulator state, only filled when the policy's Requirements ask for it.
    state: dict[str, Any] | None = None


@dataclass
class ActionChunk:
    """A policy's answer to one observation.

    `actions` is (T, action_dim), in the env's convention (ActionSpec). `failures` lists outputs
    that could not be used as produced and were replaced by a fallback (e.g. a FAST+ decode
    failure): they are counted in the episode record. `stop` ends the episode with that reason
    instead of acting. `info` holds per-query facts to record (e.g. a remote round trip in ms);
    the episode protocol aggregates them into the record's `policy_info`.
    """

    actions: np.ndarray
    failures: list[str] = field(default_factory=list)
    stop: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    observation: Observation
    success: bool
    # Set when the env itself cannot go on (lost connection, terminated sim); ends the episode.
    failure: str | None = None
    # Set when the env ended the episode normally (the operator's stop key on the real robot).
    stop: str | None = None


@dataclass(frozen=True)
class EpisodeInfo:
    """What a policy may know about an episode; JSON-able (a remote policy sends it on a wire)."""

    key: str
    suite: str
    task_id: int
    trial: int
    init_state: int
    seed: int
    instruction: str = ""
    # How the harness executes a chunk (chunking.ChunkRule syntax): which row of a chunk acts last.
    chunk_exec: str = "all"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EpisodeInfo":
        return cls(**data)


@dataclass(frozen=True)
class GripperConvention:
    """What the last action dimension means: the value that opens and the value that closes."""

    name: str
    open: float
    close: float


LIBERO_GRIPPER = GripperConvention("libero", open=-1.0, close=1.0)
BRIDGE_GRIPPER = GripperConvention("bridge", open=1.0, close=0.0)  # Bridge data / WidowX
GRIPPERS = {g.name: g for g in (LIBERO_GRIPPER, BRIDGE_GRIPPER)}


@dataclass(frozen=True)
class ActionSpec:
    """What an env accepts and offers: action dimension, gripper convention, cameras and their aliases.

    `cameras` are the canonical names observations carry; `camera_aliases` maps other names a
    preset or a protocol may use (e.g. LIBERO's `robot0_eye_in_hand`) to them. This is the one
    camera-name table of each env.
    """

    dim: int = 7
    gripper: GripperConvention = LIBERO_GRIPPER
    cameras: tuple[str, ...] = ("agentview", "wrist")
    camera_aliases: tuple[tuple[str, str], ...] = (("image", "agentview"),)

    @property
    def dummy_action(self) -> np.ndarray:
        """No motion, gripper open: what settle steps send."""
        return np.concatenate([np.zeros(self.dim - 1), [self.gripper.open]]).astype(np.float64)

    def resolve_camera(self, name: str) -> str | None:
        """The canonical camera a name means (None if the env has no such camera)."""
        name = dict(self.camera_aliases).get(name, name)
        return name if name in self.cameras else None

    def camera_names(self, canonical: str) -> tuple[str, ...]:
        """A canonical camera and every alias of it."""
        return (canonical,) + tuple(a for a, c in self.camera_aliases if c == canonical)


@dataclass(frozen=True)
class Requirements:
    """What a policy needs from the env; the env renders nothing else."""

    cameras: tuple[str, ...] = ("agentview",)
    state: bool = False  # privileged simulator state (scripted expert)
    # The gripper convention the policy's actions are in (None: it adapts to the env's).
    gripper: str | None = None


def incompatibility(needs: Requirements, spec: ActionSpec, env: str) -> str | None:
    """Why a policy with `needs` cannot run on an env declaring `spec` (None if it can)."""
    for cam in needs.cameras:
        if spec.resolve_camera(cam) is None:
            names = sorted(set(spec.cameras) | {a for a, _ in spec.camera_aliases})
            return f"the policy needs camera {cam!r}, which the {env} env does not have (it has: {', '.join(names)})"
    if needs.gripper is not None and needs.gripper != spec.gripper.name:
        return (f"the policy emits gripper values in the {needs.gripper!r} convention, and the {env} env takes "
                f"{spec.gripper.name!r} ({spec.gripper.open:g} open, {spec.gripper.close:g} close)")
    return None
