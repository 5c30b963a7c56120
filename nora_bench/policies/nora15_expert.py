"""NORA-1.5's network: the NORA VLM (Qwen2.5-VL) plus a flow-matching action expert.

Written from declare-lab/nora-1.5 `inference/modelling_expert.py` (commit d1cdce2) for transformers
5.x; the parameter names are the published ones (`vlm.*`, `action_expert.*`, `action_in_proj`,
`action_out_proj`, `action_time_mlp_in`, `action_time_mlp_out`), so a published `model.safetensors`
loads with strict key checking.

What the published code does, and this module reproduces:
- the expert is a Qwen2.5-VL text decoder (no token embedding) of hidden size 0.375 x the VLM's,
  the VLM's layer count, 6 heads (same head size as the VLM), an FFN of
  `get_intermediate_size(hidden)`; layer i attends to the VLM's cached keys/values of layer i
  (one prefill of the prompt) followed by its own keys/values of the 5 action tokens;
- the expert's queries and keys get plain 1-D RoPE (max wavelength 10,000) over positions 0..4,
  not the VLM's M-RoPE: a published quirk, kept, since the weights were trained with it;
- the action tokens see every non-padding prompt token and each other (prefix-LM mask);
- sampling: Gaussian noise (B, 5, 7) in float32, Euler steps from t = 1 to 0 with dt = -1/steps,
  the time tensor kept in the model's dtype (bf16 time drifts: 1.0, 0.898, ..., 0.095; the
  published loop runs while t >= -dt/2), velocity from `action_out_proj(expert(...))`, the
  noisy actions updated in float32.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from nora_bench import UserError

# The published constructor's defaults (VLAWithExpert.__init__).
WIDTH_MULTIPLIER = 0.375
EXPERT_HEADS = 6
CHUNK_LENGTH = 5
ACTION_DIM = 7
NUM_STEPS = 10
TIME_MIN_PERIOD, TIME_MAX_PERIOD = 4e-3, 4.0
ROPE_MAX_WAVELENGTH = 10_000


def get_intermediate_size(hidden: int, ffn_dim_multiplier: int = 4, multiple_of: int = 256) -> int:
    """The expert's FFN width, as published (LLaMA-style 2/3 x 4 x hidden, rounded up to 256)."""
    hidden = int(2 * hidden / 3)
    hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def expert_text_config(vlm_text_config, width_multiplier: float = WIDTH_MULTIPLIER, heads: int = EXPERT_HEADS):
    """The expert's Qwen2.5-VL text config: the VLM's, narrowed (as the published constructor builds it)."""
    cfg = copy.deepcopy(vlm_text_config)
    hidden = int(vlm_text_config.hidden_size * width_multiplier)
    cfg.hidden_size = hidden
    cfg.intermediate_size = get_intermediate_size(hidden)
    cfg.num_hidden_layers = vlm_text_config.num_hidden_layers
    cfg.num_attention_heads = heads
    vlm_head = vlm_text_config.hidden_size // vlm_text_config.num_attention_heads
    if hidden % heads or hidden // heads != vlm_head:
        raise UserError(f"expert hidden size {hidden} with {heads} heads gives head size {hidden / heads:g}; it must "
                        f"equal the VLM's ({vlm_head}) to attend to the VLM's keys and values")
    if heads % vlm_text_config.num_key_value_heads:
        raise UserError(f"{heads} expert heads cannot share the VLM's {vlm_text_config.num_key_value_heads} "
                        f"key/value heads evenly")
    return cfg


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, min_period: float = TIME_MIN_PERIOD,
                              max_period: float = TIME_MAX_PERIOD) -> torch.Tensor:
    """(B,) times -> (B, dim) float32 [sin | cos] embedding over geometric periods (pi0's)."""
    if dim % 2:
        raise ValueError(f"time embedding size {dim} must be even")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float32, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    # A bf16 `t` is promoted to float32 here, as in the published code.
    angle = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def rope_1d(x: torch.Tensor, positions: torch.Tensor, max_wavelength: int = ROPE_MAX_WAVELENGTH) -> torch.Tensor:
    """Plain RoPE on x (B, H, S, D) at positions (S,), computed in float32 (the published `apply_rope`)."""
    dtype = x.dtype
    x = x.float()
    half = x.shape[-1] // 2
    exponents = (2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device)
    radians = positions.float()[:, None] / (max_wavelength ** exponents)[None, :]  # (S, D/2)
    sin, cos = torch.sin(radians), torch.cos(radians)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(dtype)


class ActionExpert(nn.Module):
    """Decoder layers and final norm of a Qwen2.5-VL text model (no embedding, no M-RoPE).

    Built from transformers' own `Qwen2_5_VLDecoderLayer` / `Qwen2_5_VLRMSNorm`, so the parameter
    names are those of the published `Qwen2_5_VLAExpert`; only the attention is wired differently.
    """

    def __init__(self, config):
        super().__init__()
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer, Qwen2_5_VLRMSNorm

        self.config = config
        self.layers = nn.ModuleList(Qwen2_5_VLDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Qwen2_5_VLRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x: torch.Tensor, prefix_kv: list[tuple[torch.Tensor, torch.Tensor]],
                mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, H) action embeddings; prefix_kv per layer (B, kv_heads, S, D); mask (B, 1, T, S+T) bool."""
        positions = torch.arange(x.shape[1], device=x.device)
        for layer, (past_k, past_v) in zip(self.layers, prefix_kv, strict=True):
            h = layer.input_layernorm(x)
            x = x + self._attend(layer.self_attn, h, past_k, past_v, mask, positions)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.norm(x)

    def _attend(self, attn, h, past_k, past_v, mask, positions):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import eager_attention_forward

        b, t, _ = h.shape
        q = attn.q_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
        q, k = rope_1d(q, positions), rope_1d(k, positions)
        k = torch.cat([past_k, k], dim=2).to(q.dtype)
        v = torch.cat([past_v, v], dim=2).to(q.dtype)
        # A 4-D boolean mask: eager or SDPA (the published expert ran SDPA, its VLM's implementation).
        if self.config._attn_implementation == "eager":
            interface = eager_attention_forward  # it adds the mask to the scores: make it additive
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, torch.finfo(q.dtype).min)
        else:
            interface = ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", eager_attention_forward)
        out, _ = interface(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling, sliding_window=None,
                           is_causal=False)
        return attn.o_proj(out.reshape(b, t, -1).contiguous())


@dataclass
class SampleTiming:
    """Seconds spent in one `sample` call: the VLM prefill and the expert's Euler steps."""

    prefill_s: float = 0.0
    expert_s: float = 0.0
    steps: int = 0
    times: list[float] = field(default_factory=list)  # the flow times the expert was queried at


class Nora15Model(nn.Module):
    """`vlm` (Qwen2_5_VLForConditionalGeneration) + `action_expert` + the action/time projections."""

    def __init__(self, vlm_config, *, width_multiplier: float = WIDTH_MULTIPLIER, expert_heads: int = EXPERT_HEADS,
                 chunk_length: int = CHUNK_LENGTH, action_dim: int = ACTION_DIM):
        super().__init__()
        from transformers import Qwen2_5_VLForConditionalGeneration

        self.vlm = Qwen2_5_VLForConditionalGeneration(vlm_config)
        cfg = expert_text_config(vlm_config.text_config, width_multiplier, expert_heads)
        cfg._attn_implementation = vlm_config.text_config._attn_implementation
        self.expert_config = cfg
        self.action_expert = ActionExpert(cfg)
        hidden = cfg.hidden_size
        self.chunk_length, self.action_dim = int(chunk_length), int(action_dim)
        self.action_in_proj = nn.Linear(action_dim, hidden)
        self.action_out_proj = nn.Linear(hidden, action_dim)
        self.action_time_mlp_in = nn.Linear(hidden * 2, hidden)
        self.action_time_mlp_out = nn.Linear(hidden, hidden)

    @property
    def dtype(self) -> torch.dtype:
        return self.action_in_proj.weight.dtype

    # -- sampling ---------------------------------------------------------------------------------
    def prefill(self, inputs: dict) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """One VLM pass over the prompt: per-layer (keys, values) and the prompt's padding mask (B, S)."""
        out = self.vlm.model(**inputs, use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        return kv, inputs["attention_mask"].bool()

    def velocity(self, x: torch.Tensor, t: torch.Tensor, prefix_kv, mask: torch.Tensor) -> torch.Tensor:
        """The published `denoise_step`: v(x_t, t) for x (B, T, A) at times t (B,)."""
        x = x.to(self.dtype)
        actions = self.action_in_proj(x)
        temb = sinusoidal_time_embedding(t, actions.shape[-1]).to(x.dtype)[:, None, :].expand_as(actions)
        h = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([actions, temb], dim=2))))
        return self.action_out_proj(self.action_expert(h, prefix_kv, mask))

    @torch.inference_mode()
    def sample(self, inputs: dict, noise: torch.Tensor, num_steps: int = NUM_STEPS,
               timing: SampleTiming | None = None) -> torch.Tensor:
        """Normalized action chunks (B, T, A) float32 from the prompt inputs and float32 noise (B, T, A)."""
        sync = torch.cuda.synchronize if noise.is_cuda else (lambda: None)
        t0 = time.perf_counter()
        prefix_kv, pad = self.prefill(inputs)
        sync()
        t1 = time.perf_counter()
        b, n = noise.shape[:2]
        # Action tokens attend to every non-padding prompt token and to all action tokens: the rows of
        # the published make_att_2d_masks(...) for the action tokens reduce to this.
        keys = torch.cat([pad, torch.ones(b, n, dtype=torch.bool, device=pad.device)], dim=1)
        mask = keys[:, None, None, :].expand(b, 1, n, keys.shape[1])
        x = noise.clone().float()
        dt = -1.0 / num_steps
        t = torch.tensor(1.0, dtype=self.dtype, device=noise.device)
        steps: list[float] = []
        while t >= -dt / 2:
            steps.append(float(t))
            x += dt * self.velocity(x, t.expand(b), prefix_kv, mask)
            t += dt
        sync()
        if timing is not None:
            timing.prefill_s += t1 - t0
            timing.expert_s += time.perf_counter() - t1
            timing.steps = len(steps)
            timing.times = steps
        return x


# -- loading ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def parameters_on_meta():
    """Build modules with their parameters on the meta device (no memory, no random init); buffers
    (e.g. RoPE inverse frequencies, not saved in checkpoints) stay real."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and not param.is_meta:  # (a meta one may be a tied weight: keep it as it is)
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of `model.safetensors` (or the shards its index names) in `folder`."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(folder / shard))
        return state
    path = folder / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{folder} holds no model.safetensors (the published NORA-1.5 weights file)")
    return load_file(path)


def tied_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names grouped by the parameter or buffer they name (tied weights share a group)."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    persistent = set(model.state_dict(keep_vars=True))
    for name, b in model.named_buffers(remove_duplicate=False):
        if name in persistent:
            groups.setdefault(id(b), []).append(name)
    return list(groups.values())


def check_keys(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The state dict completed for tied aliases; missing or unexpected keys (or shapes) raise, naming them."""
    groups = tied_groups(model)
    known = {n for g in groups for n in g}
    unexpected = sorted(set(state) - known)
    missing = [g[0] for g in groups if not any(n in state for n in g)]
    if missing or unexpected:
        def some(names):
            return ", ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")
        parts = ([f"{len(missing)} missing: {some(missing)}"] if missing else []) + (
            [f"{len(unexpected)} unexpected: {some(unexpected)}"] if unexpected else [])
        raise UserError(f"{source} does not match the NORA-1.5 architecture ({'; '.join(parts)}); "
                        f"is it a NORA-1.5 checkpoint, and do vlm_config / expert settings match it?")
    full = dict(state)
    shapes = {n: p.shape for n, p in model.state_dict(keep_vars=True).items()}
    for g in groups:
        present = next(n for n in g if n in state)
        for n in g:
            full.setdefault(n, state[present])
    wrong = [f"{n} {tuple(full[n].shape)} != {tuple(shapes[n])}" for n in shapes if full[n].shape != shapes[n]]
    if wrong:
        raise UserError(f"{source}: {len(wrong)} tensors have the wrong shape for this architecture, e.g. {wrong[0]}")
    return full


def load_nora15(folder: Path, vlm_config, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                attn: str = "sdpa", **arch) -> Nora15Model:
    """A Nora15Model from a published-layout folder (`model.safetensors` holding every weight)."""
    vlm_config = copy.deepcopy(vlm_config)
    vlm_config._attn_implementation = attn
    vlm_config.text_config._attn_implementation = attn
    vlm_config.vision_config._attn_implementation = attn
    with parameters_on_meta():
        model = Nora15Model(vlm_config, **arch)
    state = check_keys(model, read_safetensors(Path(folder)), f"{folder}/model.safetensors")
    model.load_state_dict(state, strict=True, assign=True)
    model.vlm.tie_weights()
    # Everything in one dtype, buffers included, as the published wrappers do (`model.to(torch.bfloat16)`).
    return model.to(device=device, dtype=dtype).eval()
