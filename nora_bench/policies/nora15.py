"""NORA-1.5: NORA's VLM plus a flow-matching action expert (declare-lab/nora-1.5, arXiv 2511.14659).

Per batch of observations (declare-lab/nora-1.5 `inference/modelling_expert.py`, d1cdce2): the NORA
prompt (one 224 image and the instruction, `nora_prompt.py`), one VLM prefill for the batch, 10 Euler
steps of the action expert from Gaussian noise (B, 5, 7) (`nora15_expert.py`), un-normalization with
q01/q99 AND the statistics' mask (the gripper stays as the model gave it, in [0, 1]), then the
target's gripper rule: LIBERO binarizes at 0.5 and inverts (OpenVLA's `normalize_gripper_action` +
`invert_gripper_action`, which the authors say to use), Bridge/WidowX opens above 0.5 (the published
SimplerEnv wrapper's `2 * (g > 0.5) - 1`, in the WidowX convention 1 = open, 0 = closed).

Noise comes from a `torch.Generator` per observation, seeded from (episode seed, episode key,
query index): an episode's actions do not depend on what else shares its batch, and a rerun
repeats them. The published code draws from torch's global generator.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nora_bench import UserError
from nora_bench.policies.checkpoints import resolve_folder
from nora_bench.policies.config import PolicyConfig
from nora_bench.policies.nora import _check_choice, check_prompt_fields, gripper_libero, hub_revision, resolve_runtime
from nora_bench.policies.nora15_expert import ACTION_DIM, CHUNK_LENGTH, EXPERT_HEADS, NUM_STEPS, WIDTH_MULTIPLIER, SampleTiming
from nora_bench.policies.nora_prompt import NoraPrompt
from nora_bench.policies.unnorm import Bounds, load_bounds
from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo

GRIPPERS = ("libero", "bridge")
WEIGHT_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors", "*.json"]
PROCESSOR_FILES = ["*.json", "*.jinja", "*.txt", "tokenizer*", "vocab*", "merges*"]
VLM_SUBFOLDER, PROCESSOR_SUBFOLDER = "vlm", "processor"


def gripper_bridge(actions: np.ndarray) -> np.ndarray:
    """The SimplerEnv NORA-1.5 wrapper's WidowX rule, open above 0.5; WidowX convention: 1 = open, 0 = closed."""
    a = actions.copy()
    a[..., -1] = np.where(a[..., -1] > 0.5, 1.0, 0.0)
    return a


GRIPPER_RULES = {"libero": gripper_libero, "bridge": gripper_bridge}


def noise_generator(seed: int, key: str, query: int):
    """The generator for one query of one episode (SeedSequence mixes the three into 64 bits)."""
    import torch

    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode()), int(query)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True, kw_only=True)
class Nora15Config(PolicyConfig):
    """The preset fields of `kind: nora15` (policies/nora15*.yaml)."""

    checkpoint: str  # a hub id or a local folder (--checkpoint)
    vlm_config: str = "declare-lab/nora-long"  # used when the checkpoint holds no VLM config
    processor: str = "declare-lab/nora"  # used when the checkpoint holds no processor
    norm_stats: str = "nora15_libero"
    unnorm_key: str | None = None
    # The env convention the checkpoint was fine-tuned for (checked before a run); the gripper rule
    # applied is the env's (ActionSpec).
    gripper: str | None = None
    cameras: tuple[str, ...] = ("agentview",)
    image_size: int = 224
    image_resize: str = "openvla"
    num_steps: int = NUM_STEPS  # Euler steps of the flow
    chunk_length: int = CHUNK_LENGTH
    width_multiplier: float = WIDTH_MULTIPLIER
    expert_heads: int = EXPERT_HEADS
    device: str = "auto"
    dtype: str = "bf16"
    attn: str = "auto"

    def check(self) -> None:
        check_prompt_fields(self, GRIPPERS, "NORA-1.5")
        if self.num_steps < 1:
            raise UserError(f"num_steps must be >= 1, got {self.num_steps}")
        if min(self.image_size, self.chunk_length, self.expert_heads) < 1 or self.width_multiplier <= 0:
            raise UserError("image_size, chunk_length and expert_heads must be >= 1, width_multiplier > 0")


class Nora15Policy:
    """A NORA-1.5 checkpoint (see policies/nora15*.yaml for the presets)."""

    config_class = Nora15Config

    def __init__(self, config: Nora15Config, action_spec: ActionSpec):
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLConfig

        from nora_bench.policies.images import check_pipeline
        from nora_bench.policies.nora15_expert import load_nora15

        c = self.config = config
        check_pipeline(c.image_resize)
        self.requirements = c.requirements()
        _check_choice("env gripper convention", action_spec.gripper.name, GRIPPERS)
        self.gripper, self.num_steps = action_spec.gripper.name, c.num_steps
        self.device, self.dtype, self.attn = resolve_runtime(c.device, c.dtype, c.attn)
        files = self.resolve_files(c.checkpoint, c.vlm_config, c.processor, c.norm_stats, c.unnorm_key)
        self.checkpoint_dir, self.bounds = files["checkpoint"], files["bounds"]
        self.prompt = NoraPrompt(AutoProcessor.from_pretrained(files["processor"]), c.cameras[0], action_spec,
                                 c.image_size, c.image_resize)
        self.model = load_nora15(self.checkpoint_dir, Qwen2_5_VLConfig.from_pretrained(files["vlm_config"]),
                                 dtype=getattr(torch, self.dtype), device=self.device, attn=self.attn,
                                 width_multiplier=float(c.width_multiplier), expert_heads=c.expert_heads,
                                 chunk_length=c.chunk_length, action_dim=ACTION_DIM)
        self.info = {"checkpoint_dir": str(self.checkpoint_dir), "vlm_config": str(files["vlm_config"]),
                     "processor": str(files["processor"]), "bounds": self.bounds.source, "device": self.device,
                     "dtype": self.dtype, "attn": self.attn}
        self.last_timing = SampleTiming()
        self._episodes: dict[str, list[int]] = {}  # key -> [seed, queries so far]
        self._prompt_lengths: dict[str, int] = {}

    # -- files ------------------------------------------------------------------------------------
    @staticmethod
    def resolve_files(checkpoint: str, vlm_config: str, processor: str, norm_stats: str,
                      unnorm_key: str | None) -> dict[str, Any]:
        """Weights folder, VLM config folder, processor folder and bounds; fails fast with one line.

        The VLM config and the processor come from the checkpoint folder when it holds them (`vlm/`,
        `processor/`, or at its top), else from `vlm_config` / `processor` (the published code takes
        them from declare-lab/nora-long and declare-lab/nora; only their small files are fetched).
        """
        fix = "pass --checkpoint PATH to a local copy of the checkpoint folder"
        ckpt = resolve_folder(str(checkpoint), "checkpoint", fix, WEIGHT_FILES)
        if not ((ckpt / "model.safetensors").is_file() or (ckpt / "model.safetensors.index.json").is_file()):
            raise UserError(f"checkpoint {checkpoint!r} ({ckpt}) has no model.safetensors: not a NORA-1.5 checkpoint")
        if (ckpt / VLM_SUBFOLDER / "config.json").is_file():
            vlm = ckpt / VLM_SUBFOLDER
        elif _model_type(ckpt / "config.json") == "qwen2_5_vl":
            vlm = ckpt
        else:
            vlm = resolve_folder(str(vlm_config), "VLM config", "set vlm_config to a folder holding the VLM's "
                                 "config.json (declare-lab/nora-long's)", ["config.json"])
            if _model_type(vlm / "config.json") != "qwen2_5_vl":
                raise UserError(f"vlm_config {vlm_config!r} ({vlm}) holds no Qwen2.5-VL config.json")
        if _has_processor(ckpt / PROCESSOR_SUBFOLDER):
            proc = ckpt / PROCESSOR_SUBFOLDER
        elif _has_processor(ckpt):
            proc = ckpt
        else:
            proc = resolve_folder(str(processor), "processor", "set processor to a local copy of declare-lab/nora's "
                                  "processor files", PROCESSOR_FILES)
        return {"checkpoint": ckpt, "vlm_config": vlm, "processor": proc,
                "bounds": load_bounds(norm_stats, unnorm_key, ckpt)}

    @classmethod
    def check_config(cls, c: Nora15Config) -> dict[str, Any]:
        """Resolve (and download) what a preset needs before any worker starts; returns what to record."""
        files = cls.resolve_files(c.checkpoint, c.vlm_config, c.processor, c.norm_stats, c.unnorm_key)
        device, dtype, attn = resolve_runtime(c.device, c.dtype, c.attn)
        bounds: Bounds = files["bounds"]
        return {"checkpoint_dir": str(files["checkpoint"]), "checkpoint_revision": hub_revision(files["checkpoint"]),
                "vlm_config_dir": str(files["vlm_config"]), "processor_dir": str(files["processor"]),
                "bounds": bounds.source, "low": bounds.low.tolist(), "high": bounds.high.tolist(),
                "mask": None if bounds.mask is None else bounds.mask.tolist(),
                "device": device, "dtype": dtype, "attn": attn}

    # -- the Policy interface ---------------------------------------------------------------------
    def start_episode(self, info: EpisodeInfo) -> None:
        self._episodes[info.key] = [int(info.seed), 0]

    def end_episode(self, key: str) -> None:
        self._episodes.pop(key, None)

    def batch_key(self, obs) -> int:
        """Only prompts of one token length share a batch (no padding): then a batch gives exactly
        the actions of single calls (nora_bench/batching.py). The image adds the same tokens to every prompt."""
        n = self._prompt_lengths.get(obs.instruction)
        if n is None:
            n = self._prompt_lengths[obs.instruction] = len(self.prompt.processor.tokenizer(obs.instruction)["input_ids"])
        return n

    def act(self, observations: list) -> list[ActionChunk]:
        if not observations:
            return []
        normalized = self.sample(observations)
        t = self.last_timing
        # Per query, recorded in the episode's `policy_info`: the batch's sampling cost and size.
        info = {"batch": len(observations), "prefill_ms": round(t.prefill_s * 1e3, 3),
                "expert_ms": round(t.expert_s * 1e3, 3), "flow_steps": t.steps}
        return [self.to_chunk(a, info) for a in normalized]

    # -- steps ----------------------------------------------------------------------------------------
    def noise(self, episode: str):
        """This query's noise (chunk, 7) for `episode`, in float32 on the CPU (then moved)."""
        import torch

        if episode not in self._episodes:
            raise ValueError(f"act() for episode {episode!r} before start_episode()")
        state = self._episodes[episode]
        g = noise_generator(state[0], episode, state[1])
        state[1] += 1
        return torch.randn((self.model.chunk_length, self.model.action_dim), generator=g, dtype=torch.float32)

    def sample(self, observations: list) -> np.ndarray:
        """Normalized chunks (B, chunk, 7) for a batch: one prefill, then the Euler steps, batched."""
        import torch

        inputs = self.prompt.inputs(observations, self.device, self.dtype)
        noise = torch.stack([self.noise(o.episode) for o in observations]).to(self.device)
        self.last_timing = SampleTiming()
        x = self.model.sample(dict(inputs), noise, self.num_steps, self.last_timing)
        return x.cpu().numpy().astype(np.float64)

    def to_chunk(self, normalized: np.ndarray, info: dict | None = None) -> ActionChunk:
        """Un-normalize with the mask, then the target's gripper rule; non-finite output ends the episode."""
        if not np.isfinite(normalized).all():
            reason = "NORA-1.5 produced non-finite actions (NaN/inf)"
            return ActionChunk(np.zeros_like(normalized), failures=[reason], stop=reason, info=dict(info or {}))
        return ActionChunk(GRIPPER_RULES[self.gripper](self.bounds.unnormalize_masked(normalized)),
                           info=dict(info or {}))


def _has_processor(folder: Path) -> bool:
    # transformers 4.x saves preprocessor_config.json, 5.x processor_config.json.
    return any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json"))


def _model_type(config_json: Path) -> str | None:
    try:
        return json.loads(config_json.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
