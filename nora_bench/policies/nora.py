"""NORA and NORA-LONG (Qwen2.5-VL-3B emitting FAST+ action tokens), as the published inference code runs them.

The flow per observation (declare-lab/nora, REFERENCE.md section 2): a single user chat message
with the agentview image (224x224) and the instruction, the checkpoint's chat template,
qwen-vl-utils vision info, the processor, greedy generate with the checkpoint's generation
config, every generated id in the action-token range shifted to FAST+ ids, FAST+ decode (time
horizon 1 for NORA, 5 for NORA-LONG), un-normalization, and the gripper post-processing of the
target env. A batch of observations runs as one generate call with left padding.

Deliberate differences from the reference, all named options or harmless:
- a decode failure is reported and counted; the fallback is `decode_fallback`: `reference`
  (the reference's all-zero normalized chunk, i.e. the midpoint of the bounds), `hold` (no
  motion, gripper as last commanded) or `fail` (end the episode);
- only the newly generated ids are scanned for action tokens (the prompt holds none);
- the OpenVLA image resize (JPEG round trip, Lanczos) is done with Pillow, not TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nora_bench import UserError
from nora_bench.chunking import ChunkRule
from nora_bench.policies.checkpoints import resolve_folder
from nora_bench.policies.config import PolicyConfig
from nora_bench.policies.fast import TRUNCATED, FastDecodeError, FastTokenizer
from nora_bench.policies.nora_prompt import NoraPrompt
from nora_bench.policies.unnorm import Bounds, load_bounds
from nora_bench.types import GRIPPERS, ActionChunk, ActionSpec, EpisodeInfo

ACTION_TOKEN_MIN = 151665  # <robot_action_0>
ACTION_TOKEN_MAX = 153712  # <robot_action_2047>
ACTION_DIM = 7
FALLBACKS = ("reference", "hold", "fail")
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}
ATTNS = ("auto", "flash_attention_2", "sdpa", "eager")
FAST_SUBFOLDER = "fast_tokenizer"  # a checkpoint may carry its own FAST+ tokenizer here


def gripper_libero(actions: np.ndarray) -> np.ndarray:
    """NORA's LIBERO script: [0,1] -> [-1,1], sign, invert (data has 0 = close), then 0 -> +1 (close)."""
    a = actions.copy()
    g = np.sign(2.0 * a[..., -1] - 1.0) * -1.0
    a[..., -1] = np.where(g >= 0.0, 1.0, g)
    return a


def postprocess_gripper(actions: np.ndarray, target: str) -> np.ndarray:
    # Bridge/WidowX: the published WidowX script sends the un-normalized action as it is.
    return gripper_libero(actions) if target == "libero" else actions.copy()


@dataclass(frozen=True, kw_only=True)
class NoraConfig(PolicyConfig):
    """The preset fields of `kind: nora` (policies/nora*.yaml)."""

    checkpoint: str  # a hub id or a local folder (--checkpoint)
    time_horizon: int = 1  # actions per FAST+ chunk: 1 for NORA, 5 for NORA-LONG
    norm_stats: str = "checkpoint"  # where the un-normalization bounds come from (policies/unnorm.py)
    unnorm_key: str | None = None
    # The env convention the checkpoint was fine-tuned for: a run on another env is refused before it
    # starts. The post-processing follows the env's convention.
    gripper: str | None = None
    decode_fallback: str = "reference"  # after a FAST+ decode failure: reference, hold or fail
    fast_tokenizer: str = "physical-intelligence/fast"
    cameras: tuple[str, ...] = ("agentview",)  # the first is the model's image
    image_size: int = 224
    image_resize: str = "openvla"  # policies/images.py
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "auto"
    max_new_tokens: int | None = None  # None: the checkpoint's generation config (transformers: 20)

    def check(self) -> None:
        _check_choice("decode_fallback", self.decode_fallback, FALLBACKS)
        check_prompt_fields(self, tuple(GRIPPERS), "NORA")
        if self.time_horizon < 1:
            raise UserError(f"time_horizon must be >= 1, got {self.time_horizon}")
        if self.image_size < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise UserError("image_size and max_new_tokens must be >= 1")


class NoraPolicy:
    """A NORA / NORA-LONG checkpoint (see policies/nora*.yaml for the presets)."""

    config_class = NoraConfig

    def __init__(self, config: NoraConfig, action_spec: ActionSpec):
        import torch

        from nora_bench.policies.images import check_pipeline

        c = self.config = config
        self.image_pipeline = check_pipeline(c.image_resize)
        self.requirements = c.requirements()
        self.action_spec = action_spec
        self.time_horizon, self.fallback = c.time_horizon, c.decode_fallback
        self.gripper = action_spec.gripper.name
        self.device, self.dtype, self.attn = resolve_runtime(c.device, c.dtype, c.attn)

        self.checkpoint_dir, fast_dir, self.bounds = self.resolve_files(c.checkpoint, c.fast_tokenizer, c.norm_stats,
                                                                        c.unnorm_key)
        self.fast = FastTokenizer.load(fast_dir, time_horizon=self.time_horizon, action_dim=ACTION_DIM)

        from transformers import AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(self.checkpoint_dir)
        check_action_tokens(self.processor.tokenizer, c.checkpoint)
        # The shared NORA prompt; it pads batches on the left so that every row's generation starts at the same place.
        self.prompt = NoraPrompt(self.processor, c.cameras[0], action_spec, c.image_size, c.image_resize)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            self.checkpoint_dir, dtype=getattr(torch, self.dtype), attn_implementation=self.attn).to(self.device).eval()
        try:
            self.generation_config = GenerationConfig.from_pretrained(self.checkpoint_dir)
        except OSError:
            self.generation_config = self.model.generation_config
        self.generation_config.do_sample = False  # greedy, as the reference sets it
        if c.max_new_tokens is not None:
            # Without it, transformers generates at most 20 new tokens (its default), as for the reference.
            self.generation_config.max_new_tokens = c.max_new_tokens
        self.model.generation_config = self.generation_config  # as the reference sets it
        self.info = {"checkpoint_dir": str(self.checkpoint_dir), "fast_tokenizer": str(fast_dir),
                     "bounds": self.bounds.source, "device": self.device, "dtype": self.dtype, "attn": self.attn,
                     **self.image_pipeline.info()}
        # Per episode: the chunk row whose gripper command is executed last (for `hold`) and that command.
        self._last_row: dict[str, int] = {}
        self._gripper: dict[str, float] = {}

    # -- files ------------------------------------------------------------------------------------
    @staticmethod
    def resolve_files(checkpoint: str, fast_tokenizer: str, norm_stats: str, unnorm_key: str | None
                      ) -> tuple[Path, Path, Bounds]:
        """Checkpoint folder, FAST+ folder and bounds; fails fast with one line (used by `check_preset`)."""
        fix = "pass --checkpoint PATH to a local copy of the checkpoint folder"
        ckpt = resolve_folder(str(checkpoint), "checkpoint", fix)
        if not (ckpt / "config.json").is_file():
            raise UserError(f"checkpoint {checkpoint!r} ({ckpt}) has no config.json: not a transformers model folder")
        try:  # a broken config.json would otherwise only fail inside the policy actor
            json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"checkpoint {checkpoint!r}: {ckpt / 'config.json'} is not JSON ({e}): "
                            "not a transformers model folder, or a damaged download") from None
        if (ckpt / FAST_SUBFOLDER / "processor_config.json").is_file():
            fast_dir = ckpt / FAST_SUBFOLDER
        else:
            fast_dir = resolve_folder(str(fast_tokenizer), "FAST+ tokenizer",
                                      f"set fast_tokenizer to a local copy of physical-intelligence/fast, or put it "
                                      f"in {ckpt / FAST_SUBFOLDER}")
        return ckpt, fast_dir, load_bounds(norm_stats, unnorm_key, ckpt)

    @classmethod
    def check_config(cls, c: NoraConfig) -> dict[str, Any]:
        """Resolve (and download) everything a preset needs before any worker starts; returns what
        to record: the folders used, their hub revisions, the bounds, the runtime."""
        ckpt, fast_dir, bounds = cls.resolve_files(c.checkpoint, c.fast_tokenizer, c.norm_stats, c.unnorm_key)
        device, dtype, attn = resolve_runtime(c.device, c.dtype, c.attn)
        from nora_bench.policies.images import check_pipeline

        images = check_pipeline(c.image_resize).info()
        return {**images, "checkpoint_dir": str(ckpt), "checkpoint_revision": hub_revision(ckpt),
                "fast_tokenizer_dir": str(fast_dir), "fast_tokenizer_revision": hub_revision(fast_dir),
                "bounds": bounds.source,
                "low": bounds.low.tolist(), "high": bounds.high.tolist(), "device": device, "dtype": dtype, "attn": attn}

    # -- the Policy interface ---------------------------------------------------------------------
    def start_episode(self, info: EpisodeInfo) -> None:
        rule = ChunkRule.parse(info.chunk_exec)
        if rule.kind == "all":
            last = self.time_horizon - 1
        elif rule.kind == "first":
            last = min(rule.k, self.time_horizon) - 1
        else:  # ensemble: every step mixes fresh predictions; the newest chunk's first row is the closest
            last = 0
        self._last_row[info.key] = last
        self._gripper[info.key] = self.action_spec.gripper.open

    def end_episode(self, key: str) -> None:
        self._last_row.pop(key, None)
        self._gripper.pop(key, None)

    def batch_key(self, obs) -> int:
        """Only prompts of one token length share a batch (no left padding): in bf16 a padded batch is not
        token-identical to single calls, an unpadded one is (nora_bench/batching.py groups by this key).
        Within one LIBERO task every prompt has the same length; the image adds the same tokens to all."""
        lengths = self.__dict__.setdefault("_prompt_lengths", {})
        n = lengths.get(obs.instruction)
        if n is None:
            n = lengths[obs.instruction] = len(self.prompt.processor.tokenizer(obs.instruction)["input_ids"])
        return n

    def act(self, observations: list) -> list[ActionChunk]:
        if not observations:
            return []
        ids = self.generate(observations)
        return [self.to_chunk(obs, row) for obs, row in zip(observations, ids)]

    # -- steps ----------------------------------------------------------------------------------------
    def generate(self, observations: list) -> list[list[int]]:
        """The newly generated token ids per observation (one generate call for the batch)."""
        import torch

        inputs = self.prompt.inputs(observations, self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        return new

    @staticmethod
    def _action_ids(generated: list[int]) -> list[int]:
        return [i - ACTION_TOKEN_MIN for i in generated if ACTION_TOKEN_MIN <= i <= ACTION_TOKEN_MAX]

    def decode(self, generated: list[int]) -> np.ndarray:
        """Normalized chunk (T, 7) from generated ids; raises FastDecodeError."""
        return self.fast.decode(self._action_ids(generated), self.time_horizon, ACTION_DIM)

    def to_chunk(self, obs, generated: list[int]) -> ActionChunk:
        """The action chunk for one observation from its generated ids (decode, un-normalize, gripper, fallback)."""
        key = obs.episode
        try:
            actions = postprocess_gripper(self.bounds.unnormalize(self.decode(generated)), self.gripper)
            failures: list[str] = []
        except FastDecodeError as e:
            detail = str(e)  # starts with the failure class (fast.FAILURE_CLASSES)
            kind = e.kind
            if self.truncated(generated):
                kind = TRUNCATED
                detail = (f"{TRUNCATED}: generation stopped at max_new_tokens={self.max_new_tokens} before the chunk "
                          f"was complete ({e}); set max_new_tokens in the preset")
                self._warn_truncated()
            reason = f"FAST+ decode failed ({detail}); fallback {self.fallback}"
            if self.fallback == "fail":
                return ActionChunk(np.zeros((self.time_horizon, ACTION_DIM)), failures=[reason], stop=reason,
                                   info={"decode_failure": kind})
            if self.fallback == "reference":
                # The published decode, exactly: unknown ids dropped, a cut character as a huge value,
                # zeros only where it raises (policies/fast.py `decode_reference`).
                normalized, classes = self.fast.decode_reference(self._action_ids(generated), self.time_horizon,
                                                                 ACTION_DIM)
                actions = postprocess_gripper(self.bounds.unnormalize(normalized), self.gripper)
                reason += f" ({'+'.join(classes)}: {'zeros' if not normalized.any() else 'decoded as published'})"
            else:  # hold: no motion, the gripper as last commanded
                actions = np.zeros((self.time_horizon, ACTION_DIM))
                actions[:, -1] = self._gripper.get(key, self.action_spec.gripper.open)
            failures = [reason]
            row = min(self._last_row.get(key, self.time_horizon - 1), len(actions) - 1)
            self._gripper[key] = float(actions[row, -1])
            # Counted per class in the record's policy_info (episode.aggregate_policy_info).
            return ActionChunk(actions, failures=failures, info={"decode_failure": kind})
        row = min(self._last_row.get(key, self.time_horizon - 1), len(actions) - 1)
        self._gripper[key] = float(actions[row, -1])
        return ActionChunk(actions, failures=failures)

    def truncated(self, generated: list[int]) -> bool:
        """Generation ran into max_new_tokens (no end-of-sequence token among the new ids)."""
        eos = self.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        return len(generated) >= self.max_new_tokens and not eos.intersection(generated)

    @property
    def max_new_tokens(self) -> int:
        # transformers' default when the generation config sets neither max_new_tokens nor max_length: 20 new tokens
        return int(self.generation_config.max_new_tokens or 20)

    def _warn_truncated(self) -> None:
        if not getattr(self, "_warned_truncated", False):
            self._warned_truncated = True
            import warnings

            warnings.warn(f"NORA generation is cut at max_new_tokens={self.max_new_tokens} before a FAST+ chunk is "
                          f"complete (decode failures of class 'truncated'): set max_new_tokens in the policy preset",
                          stacklevel=2)


def resolve_runtime(device: str, dtype: str, attn: str) -> tuple[str, str, str]:
    """(device, torch dtype name, attention implementation) from the preset's auto/explicit values."""
    import torch

    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    elif not (device == "cpu" or device.startswith(("cuda", "mps"))):
        raise UserError(f"unknown --device {device!r}: use auto, cpu, cuda or cuda:N")
    dtype = str(dtype)
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    elif dtype in DTYPES:
        dtype = DTYPES[dtype]
    else:
        raise UserError(f"unknown --dtype {dtype!r}: use auto, bf16, fp16 or fp32")
    _check_choice("--attn", attn, ATTNS)
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if attn == "auto":
        attn = "flash_attention_2" if has_flash and device.startswith("cuda") and dtype != "float32" else "sdpa"
    elif attn == "flash_attention_2" and not (has_flash and device.startswith("cuda")):
        raise UserError("--attn flash_attention_2 needs the flash-attn package and a CUDA device; use --attn sdpa")
    return device, dtype, attn


def hub_revision(folder: Path) -> str | None:
    """The hub commit of a folder in the Hugging Face cache (…/snapshots/<commit>/…), else None."""
    parts = Path(folder).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def check_action_tokens(tokenizer, checkpoint: str) -> None:
    """The checkpoint's tokenizer must hold <robot_action_0..2047> on ids 151665..153712."""
    first = tokenizer.convert_tokens_to_ids("<robot_action_0>")
    last = tokenizer.convert_tokens_to_ids(f"<robot_action_{ACTION_TOKEN_MAX - ACTION_TOKEN_MIN}>")
    if (first, last) != (ACTION_TOKEN_MIN, ACTION_TOKEN_MAX):
        unk = tokenizer.unk_token_id
        found = ("has no <robot_action_k> tokens" if first in (None, unk)
                 else f"puts <robot_action_0> on id {first} and <robot_action_2047> on id {last}")
        raise UserError(f"checkpoint {checkpoint!r} {found}; a NORA checkpoint has them on ids "
                        f"{ACTION_TOKEN_MIN}..{ACTION_TOKEN_MAX} (is this a NORA checkpoint?)")


def check_prompt_fields(config, grippers: tuple[str, ...], model: str) -> None:
    """The preset fields of the shared NORA prompt (NORA and NORA-1.5): gripper, image_resize, cameras."""
    if config.gripper is not None:
        _check_choice("gripper", config.gripper, grippers)
    from nora_bench.policies.images import pipeline

    pipeline(config.image_resize)
    if not config.cameras:
        raise UserError(f"a {model} preset needs one camera (cameras: [agentview])")


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}: use one of {', '.join(choices)}")
