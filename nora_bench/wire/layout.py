"""Observation layouts: which wire keys carry which camera, state and prompt, as data.

A layout maps nora-bench's `Observation` to a protocol's request map (client side) and back
(server side), and names the reply's action key. Presets name a layout from `LAYOUTS` or give
one inline, so DROID-style or custom key sets need no code. A key with dots is nested
(`images.agentview` is request["images"]["agentview"]).

Images reach a layout already upright (the env rotates LIBERO's cameras by 180 degrees, as both
openpi's and vla-eval's LIBERO clients do); `resize_with_pad` is openpi's
(`openpi_client/image_tools.py`: PIL bilinear, aspect kept, zero padding, centred).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nora_bench import UserError

# Named layouts. Each entry cites the published client whose request it reproduces.
LAYOUTS: dict[str, dict] = {
    # openpi examples/libero/main.py (Physical-Intelligence/openpi a58fb25): 224x224 padded images,
    # eef position + axis-angle (robosuite's formula) + 2 gripper joint positions, the task as prompt.
    "openpi-libero": {
        "prompt": "prompt",
        "images": {"observation/image": {"camera": "agentview", "resize_with_pad": 224},
                   "observation/wrist_image": {"camera": "wrist", "resize_with_pad": 224}},
        "state": {"observation/state": {"parts": ["robot0_eef_pos", "robot0_eef_quat:axisangle",
                                                  "robot0_gripper_qpos"]}},
        "actions": "actions",
    },
    # vla-eval benchmarks/libero/benchmark.py `make_obs` (vla-eval 0.8.0): agentview at the render
    # size (256, no resize), the task as task_description; the wrist image and the 8-D state only
    # when the model server asks for them (observation_params send_wrist_image / send_state),
    # the axis-angle from vla_eval.rotation.quat_to_axisangle (antipodal quaternion first).
    # Its LIBERO benchmark binarizes the gripper of every action it executes (< 0 -> -1, else +1).
    "vla-eval-libero": {
        "prompt": "task_description",
        "images": {"images.agentview": {"camera": "agentview"},
                   "images.wrist": {"camera": "wrist", "when": "send_wrist_image"}},
        "state": {"states": {"parts": ["robot0_eef_pos", "robot0_eef_quat:axisangle_antipodal",
                                       "robot0_gripper_qpos"], "when": "send_state"}},
        "actions": "actions",
        "action_transform": ["binarize_gripper"],
    },
}

# The layout each protocol uses when a preset names none.
DEFAULT_LAYOUTS = {"openpi": "openpi-libero", "vla-eval": "vla-eval-libero"}


def _axisangle(quat: np.ndarray) -> np.ndarray:
    """robosuite's quat2axisangle (xyzw), as openpi's LIBERO client copies it."""
    q = np.array(quat, dtype=np.float64)
    q[3] = min(max(q[3], -1.0), 1.0)
    den = np.sqrt(1.0 - q[3] * q[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (q[:3] * 2.0 * math.acos(q[3])) / den


def _axisangle_antipodal(quat: np.ndarray) -> np.ndarray:
    """vla_eval.rotation.quat_to_axisangle: the quaternion with w >= 0 first, float32."""
    q = -np.asarray(quat) if quat[3] < 0 else np.array(quat)
    w = float(np.clip(q[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:
        return np.zeros(3, dtype=np.float32)
    return (q[:3] / sin_half * (2.0 * np.arccos(w))).astype(np.float32)


STATE_CONVERSIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "axisangle": _axisangle,
    "axisangle_antipodal": _axisangle_antipodal,
}


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """openpi's resize_with_pad for one HxWxC uint8 image (PIL bilinear, zero padding)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    pil = Image.fromarray(image)
    cur_width, cur_height = pil.size
    ratio = max(cur_width / width, cur_height / height)
    resized_height, resized_width = int(cur_height / ratio), int(cur_width / ratio)
    resized = pil.resize((resized_width, resized_height), resample=Image.BILINEAR)
    canvas = Image.new(resized.mode, (width, height), 0)
    canvas.paste(resized, (max(0, int((width - resized_width) / 2)), max(0, int((height - resized_height) / 2))))
    return np.asarray(canvas)


def _binarize_gripper(actions: np.ndarray) -> np.ndarray:
    out = np.array(actions, dtype=np.float64)
    out[:, -1] = np.where(out[:, -1] < 0, -1.0, 1.0)
    return out


ACTION_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"binarize_gripper": _binarize_gripper}


class ReplyError(ValueError):
    """A reply nora-bench cannot execute (missing key, wrong shape, NaN): the reason is recorded."""


def get_path(data: Any, key: str) -> Any:
    """data[a][b] for key 'a.b'; KeyError naming the missing part."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            raise KeyError(key)
        data = data[part]
    return data


def set_path(data: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


@dataclass(frozen=True)
class ImageField:
    key: str
    camera: str
    resize_with_pad: int | None = None
    when: str | None = None


@dataclass(frozen=True)
class StateField:
    key: str
    parts: tuple[str, ...]
    when: str | None = None


@dataclass(frozen=True)
class Layout:
    name: str
    prompt: str
    actions: str = "actions"
    images: tuple[ImageField, ...] = ()
    state: tuple[StateField, ...] = ()
    action_transform: tuple[str, ...] = ()
    conditions: tuple[str, ...] = field(default=())  # the `when` names it uses

    @classmethod
    def resolve(cls, layout: str | dict | None, protocol: str, source: str) -> "Layout":
        """A layout by name (LAYOUTS), inline mapping, or the protocol's default."""
        if layout is None:
            layout = DEFAULT_LAYOUTS[protocol]
        if isinstance(layout, str):
            if layout not in LAYOUTS:
                raise UserError(f"{source}: unknown layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}, "
                                "or a mapping with prompt/images/state/actions")
            return cls.from_data(LAYOUTS[layout], layout)
        if not isinstance(layout, dict):
            raise UserError(f"{source}: `layout` must be a layout name or a mapping")
        return cls.from_data(layout, f"{source} layout")

    @classmethod
    def from_data(cls, data: dict, name: str) -> "Layout":
        allowed = {"prompt", "images", "state", "actions", "action_transform"}
        extra = sorted(set(data) - allowed)
        if extra:
            raise UserError(f"layout {name}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")
        if not isinstance(data.get("prompt"), str):
            raise UserError(f"layout {name}: `prompt` must name the wire key of the instruction")
        images = []
        for key, spec in (data.get("images") or {}).items():
            if not isinstance(spec, dict) or not isinstance(spec.get("camera"), str):
                raise UserError(f"layout {name}: images.{key} needs `camera: <name>`")
            bad = sorted(set(spec) - {"camera", "resize_with_pad", "when"})
            if bad:
                raise UserError(f"layout {name}: images.{key} has unknown key(s) {', '.join(bad)}; "
                                "allowed: camera, resize_with_pad, when")
            size = spec.get("resize_with_pad")
            if size is not None and (not isinstance(size, int) or size < 1):
                raise UserError(f"layout {name}: images.{key}.resize_with_pad must be a positive integer")
            images.append(ImageField(key, spec["camera"], size, spec.get("when")))
        states = []
        for key, spec in (data.get("state") or {}).items():
            parts = spec.get("parts") if isinstance(spec, dict) else None
            if not isinstance(parts, list) or not parts:
                raise UserError(f"layout {name}: state.{key} needs `parts: [state keys]`")
            for part in parts:
                conversion = part.split(":", 1)[1] if ":" in part else None
                if conversion is not None and conversion not in STATE_CONVERSIONS:
                    raise UserError(f"layout {name}: state part {part!r}: unknown conversion {conversion!r}; "
                                    f"known: {', '.join(STATE_CONVERSIONS)}")
            states.append(StateField(key, tuple(parts), spec.get("when")))
        transforms = tuple(data.get("action_transform") or ())
        for t in transforms:
            if t not in ACTION_TRANSFORMS:
                raise UserError(f"layout {name}: unknown action_transform {t!r}; known: {', '.join(ACTION_TRANSFORMS)}")
        conditions = tuple(dict.fromkeys(f.when for f in (*images, *states) if f.when))
        return cls(name, data["prompt"], data.get("actions", "actions"), tuple(images), tuple(states), transforms,
                   conditions)

    def select(self, options: dict[str, bool]) -> "Layout":
        """The layout with the fields whose `when` option is off left out."""
        keep = lambda f: f.when is None or bool(options.get(f.when))  # noqa: E731
        return Layout(self.name, self.prompt, self.actions, tuple(f for f in self.images if keep(f)),
                      tuple(f for f in self.state if keep(f)), self.action_transform, self.conditions)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.camera for f in self.images))

    # -- client side --------------------------------------------------------------------------
    def request(self, obs, camera: Callable[[str], str] = lambda c: c) -> dict:
        """The wire request for an Observation; `camera` maps a layout's camera name to the env's."""
        out: dict = {}
        for f in self.images:
            image = obs.images.get(camera(f.camera))
            if image is None:
                raise ValueError(f"the observation has no {f.camera!r} image for {f.key!r}")
            if f.resize_with_pad:
                image = resize_with_pad(image, f.resize_with_pad, f.resize_with_pad)
            set_path(out, f.key, np.ascontiguousarray(image))
        for f in self.state:
            set_path(out, f.key, np.concatenate([self._state_part(obs, p) for p in f.parts]))
        set_path(out, self.prompt, str(obs.instruction))
        return out

    @staticmethod
    def _state_part(obs, part: str) -> np.ndarray:
        key, _, conversion = part.partition(":")
        if not obs.state or key not in obs.state:
            raise ValueError(f"the observation's state has no {key!r}")
        value = np.asarray(obs.state[key], dtype=np.float64)
        return np.asarray(STATE_CONVERSIONS[conversion](value) if conversion else value, dtype=np.float64).ravel()

    def parse_actions(self, reply: Any, action_dim: int) -> np.ndarray:
        """The (T, D) actions of a reply; ReplyError with the reason when they cannot be executed."""
        try:
            raw = get_path(reply, self.actions)
        except KeyError:
            keys = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
            raise ReplyError(f"the server's reply has no {self.actions!r} (it has: {keys})") from None
        try:
            actions = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ReplyError(f"the server's {self.actions!r} is not numeric: {type(raw).__name__}") from None
        if actions.ndim == 1:
            actions = actions[None, :]
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != action_dim:
            raise ReplyError(f"the server's {self.actions!r} has shape {np.shape(raw)}, "
                             f"expected (H, {action_dim}) or ({action_dim},)")
        if not np.all(np.isfinite(actions)):
            raise ReplyError(f"the server's {self.actions!r} holds NaN or infinite values")
        for t in self.action_transform:
            actions = ACTION_TRANSFORMS[t](actions)
        return actions

    # -- server side --------------------------------------------------------------------------
    def observation(self, request: Any, episode: str, required: tuple[str, ...],
                    camera: Callable[[str], str] = lambda c: c):
        """An Observation from a wire request; ValueError naming a missing or malformed key."""
        from nora_bench.types import Observation

        if not isinstance(request, dict):
            raise ValueError(f"expected a map, got {type(request).__name__}")
        try:
            prompt = get_path(request, self.prompt)
        except KeyError:
            raise ValueError(f"the request has no {self.prompt!r} (it has: {sorted(request)})") from None
        images = {}
        for f in self.images:
            try:
                image = np.asarray(get_path(request, f.key))
            except KeyError:
                if camera(f.camera) in required:
                    raise ValueError(f"the request has no {f.key!r}, and the policy needs its "
                                     f"{f.camera!r} image (it has: {sorted(request)})") from None
                continue
            if image.ndim != 3 or image.dtype != np.uint8:
                raise ValueError(f"{f.key!r} must be an HxWxC uint8 image, got {image.dtype} {image.shape}")
            images[camera(f.camera)] = image
        state = {}
        for f in self.state:
            try:
                state[f.key] = np.asarray(get_path(request, f.key))
            except KeyError:
                pass
        missing = [c for c in required if c not in images]
        if missing:
            raise ValueError(f"the policy needs camera(s) {', '.join(missing)}, which layout {self.name} "
                             "does not carry")
        return Observation(instruction=str(prompt), episode=episode, images=images, state=state or None)
