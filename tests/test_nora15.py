"""NORA-1.5 (flow-matching action expert) with a tiny checkpoint of the full architecture built at test time.

The tiny checkpoint holds a real Qwen2.5-VL VLM and the expert, saved under the published parameter
names with safetensors' `save_model` (as the published PyTorchModelHubMixin saves). The sampler is
checked against the published algorithm written out here as declare-lab/nora-1.5
`inference/modelling_expert.py` (commit d1cdce2) runs it: `create_sinusoidal_pos_embedding`,
`apply_rope`, `make_att_2d_masks`, `Qwen2_5_VLMoTAttention.forward`, `denoise_step` and the Euler
loop of `sample_actions`; its `unnormalize_action` and OpenVLA's LIBERO gripper steps likewise.
"""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from conftest import run_cli  # noqa: E402

from nora_bench import UserError  # noqa: E402
from nora_bench.envs.base import Observation  # noqa: E402
from nora_bench.envs.libero import LIBERO_ACTION_SPEC  # noqa: E402
from nora_bench.envs.widowx import WIDOWX_ACTION_SPEC  # noqa: E402
from nora_bench.episode import EpisodeSpec  # noqa: E402
from nora_bench.policies import make_policy  # noqa: E402
from nora_bench.policies.tiny_nora15 import build_tiny_nora15  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NORA_BOUNDS = json.loads((REPO / "nora_bench" / "data" / "nora_libero_action_bounds.json").read_text())
INSTRUCTIONS = ["put the black bowl on the plate", "open the middle drawer of the cabinet", "turn on the stove",
                "put the cream cheese in the bowl"]


def observation(i, episode, size=256):
    rng = np.random.default_rng(100 + i)
    return Observation(INSTRUCTIONS[0], episode=episode,
                       images={"agentview": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)})


def spec(trial=0, seed=7):
    """What a policy learns about an episode at its start."""
    return EpisodeSpec(suite="libero_object", task_id=0, trial=trial, init_state=trial, seed=seed,
                       max_steps=10).episode_info()


def build(p):
    """The policy for the env whose gripper convention the preset names (LIBERO, or the WidowX's Bridge)."""
    return make_policy(p, WIDOWX_ACTION_SPEC if p.get("gripper") == "bridge" else LIBERO_ACTION_SPEC)


def preset(path, **kw):
    return {"kind": "nora15", "name": "tiny-nora15", "checkpoint": str(path), "norm_stats": "nora15_libero",
            "unnorm_key": "libero_object_no_noops", "gripper": "libero", "cameras": ["agentview"], "dtype": "fp32",
            "device": "cpu", **kw}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_nora15(tmp_path_factory.mktemp("ckpt") / "nora15-tiny", expert_gain=4.0)


@pytest.fixture(scope="module")
def policy(ckpt):
    return build(preset(ckpt))


# -- the published algorithm, written out -------------------------------------------------------------
def published_sinusoidal(time, dimension, min_period, max_period):
    fraction = torch.linspace(0.0, 1.0, dimension // 2, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    scaling_factor = 1.0 / period * 2 * math.pi
    sin_input = scaling_factor[None, :] * time[:, None]
    return torch.cat([torch.sin(sin_input), torch.cos(sin_input)], dim=1)


def published_apply_rope(x, positions, max_wavelength=10_000):  # x [B, L, H, D]
    d_half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.to(torch.float32)
    freq_exponents = (2.0 / x.shape[-1]) * torch.arange(d_half, dtype=torch.float32)
    timescale = max_wavelength ** freq_exponents
    radians = positions[..., None].to(torch.float32) / timescale[None, None, :].to(torch.float32)
    radians = radians[..., None, :]
    sin, cos = torch.sin(radians), torch.cos(radians)
    x1, x2 = x.split(d_half, dim=-1)
    res = torch.empty_like(x)
    res[..., :d_half] = x1 * cos - x2 * sin
    res[..., d_half:] = x2 * cos + x1 * sin
    return res.to(dtype)


def published_make_att_2d_masks(pad_masks, att_masks):
    cumsum = torch.cumsum(att_masks, dim=1)
    att_2d_masks = cumsum[:, None, :] <= cumsum[:, :, None]
    pad_2d_masks = pad_masks[:, None, :] * pad_masks[:, :, None]
    return att_2d_masks & pad_2d_masks


def published_sample(model, inputs, x_t, num_steps=10):
    """sample_actions + denoise_step + the expert's layers, as published (eager softmax attention)."""
    out = model.vlm(**inputs)  # the published call: the full model, logits and all
    kv = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    bsz, chunk = x_t.shape[0], model.chunk_length
    pad = inputs["attention_mask"].clone()
    concat_pad = torch.cat([pad, torch.ones(bsz, chunk).bool()], dim=1)
    concat_att = torch.cat([pad, torch.zeros(bsz, chunk).bool()], dim=1)
    mask = published_make_att_2d_masks(concat_pad, concat_att)[:, -chunk:, :].unsqueeze(1).bool()
    dtype = model.action_in_proj.weight.dtype
    dt = -1.0 / num_steps
    time = torch.tensor(1.0, dtype=dtype)
    times = []
    while time >= -dt / 2:
        times.append(float(time))
        x = x_t.to(dtype)
        emb = model.action_in_proj(x)
        temb = published_sinusoidal(time.expand(bsz), emb.shape[-1], 4e-3, 4.0).type(dtype)[:, None, :].expand_as(emb)
        h = model.action_time_mlp_out(torch.nn.functional.silu(model.action_time_mlp_in(torch.cat([emb, temb], 2))))
        position_ids = torch.arange(chunk)
        for i, layer in enumerate(model.action_expert.layers):
            attn = layer.self_attn
            residual = h
            hs = layer.input_layernorm(h)
            q = attn.q_proj(hs).view(bsz, chunk, -1, attn.head_dim)  # b s h d: rope applies here
            k = attn.k_proj(hs).view(bsz, chunk, -1, attn.head_dim)
            v = attn.v_proj(hs).view(bsz, chunk, -1, attn.head_dim).transpose(1, 2)
            q = published_apply_rope(q, position_ids).transpose(1, 2)
            k = published_apply_rope(k, position_ids).transpose(1, 2)
            k = torch.cat([kv.layers[i].keys, k], dim=2).to(q.dtype)
            v = torch.cat([kv.layers[i].values, v], dim=2).to(q.dtype)
            k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
            v = v.repeat_interleave(attn.num_key_value_groups, dim=1)
            scores = (q @ k.transpose(2, 3)) * attn.scaling
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            o = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
            h = residual + attn.o_proj(o.transpose(1, 2).reshape(bsz, chunk, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        v_t = model.action_out_proj(model.action_expert.norm(h))
        x_t += dt * v_t
        time += dt
    return x_t, times


# -- architecture and loading -------------------------------------------------------------------------
def test_tiny_checkpoint_holds_the_published_parameter_names_and_shapes(ckpt):
    from safetensors import safe_open

    from nora_bench.policies.nora15_expert import get_intermediate_size

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    # The VLM under `vlm.`, the expert with no token embedding, the four projections of the published class.
    assert shapes["vlm.model.language_model.layers.1.self_attn.q_proj.weight"] == (256, 256)
    assert not any(k.startswith("action_expert.embed_tokens") for k in shapes)
    hidden = int(256 * 0.375)  # lm_expert_width_multiplier
    assert shapes["action_expert.layers.1.self_attn.q_proj.weight"] == (hidden, hidden)  # 6 heads of 16
    assert shapes["action_expert.layers.1.self_attn.k_proj.weight"] == (2 * 16, hidden)  # the VLM's 2 kv heads
    assert shapes["action_expert.layers.1.mlp.gate_proj.weight"] == (get_intermediate_size(hidden), hidden)
    assert get_intermediate_size(768) == 2048  # the real 3B expert: hidden 768, FFN 2048
    assert shapes["action_expert.norm.weight"] == (hidden,)
    assert shapes["action_in_proj.weight"] == (hidden, 7) and shapes["action_out_proj.weight"] == (7, hidden)
    assert shapes["action_time_mlp_in.weight"] == (hidden, 2 * hidden)
    assert shapes["action_time_mlp_out.weight"] == (hidden, hidden)
    # Tied LM head and token embedding are stored once, as save_model / PyTorchModelHubMixin store them.
    assert "vlm.lm_head.weight" in shapes and "vlm.model.language_model.embed_tokens.weight" not in shapes


def test_loading_is_strict_and_names_missing_unexpected_and_misshapen_tensors(ckpt, tmp_path, policy):
    from safetensors.torch import load_file, save_file

    model = policy.model
    assert model.vlm.lm_head.weight.data_ptr() == model.vlm.model.language_model.embed_tokens.weight.data_ptr()
    state = load_file(ckpt / "model.safetensors")

    def variant(name, edit):
        folder = tmp_path / name
        shutil.copytree(ckpt, folder, ignore=shutil.ignore_patterns("model.safetensors"))
        s = dict(state)
        edit(s)
        save_file(s, folder / "model.safetensors")
        return folder

    missing = variant("missing", lambda s: s.pop("action_time_mlp_in.bias"))
    with pytest.raises(UserError, match=r"1 missing: action_time_mlp_in\.bias"):
        build(preset(missing))
    extra = variant("extra", lambda s: s.update({"action_expert.embed_tokens.weight": torch.zeros(3, 96)}))
    with pytest.raises(UserError, match=r"1 unexpected: action_expert\.embed_tokens\.weight"):
        build(preset(extra))
    # A checkpoint whose expert is wider than the settings say: shapes are checked too.
    with pytest.raises(UserError, match=r"wrong shape.*action_expert"):
        build(preset(ckpt, width_multiplier=0.5, expert_heads=8))
    with pytest.raises(UserError, match="head size"):
        build(preset(ckpt, expert_heads=4))


# -- sampling -------------------------------------------------------------------------------------------
def test_sampler_matches_the_published_algorithm(policy):
    obs = [observation(i, f"ep{i}") for i in range(2)]
    inputs = dict(policy.prompt.inputs(obs, "cpu", "float32"))
    noise = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(3))
    from nora_bench.policies.nora15_expert import SampleTiming

    timing = SampleTiming()
    ours = policy.model.sample(inputs, noise.clone(), 10, timing)
    with torch.no_grad():
        ref, times = published_sample(policy.model, inputs, noise.clone())
    assert timing.steps == 10 and timing.times == times
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=2e-5)
    assert ours.dtype == torch.float32 and ours.shape == (2, 5, 7)
    assert not np.allclose(ours[0].numpy(), ours[1].numpy(), atol=1e-3)  # the image matters


def test_bf16_time_drifts_as_published(policy):
    """The published loop keeps t in the model dtype: in bf16 the 10 steps run at 1.0, 0.898, ..., 0.095."""
    import copy

    model = copy.deepcopy(policy.model).to(torch.bfloat16)
    obs = [observation(0, "ep0")]
    inputs = dict(policy.prompt.inputs(obs, "cpu", "bfloat16"))
    noise = torch.randn(1, 5, 7, generator=torch.Generator().manual_seed(5))
    from nora_bench.policies.nora15_expert import SampleTiming

    timing = SampleTiming()
    ours = model.sample(inputs, noise.clone(), 10, timing)
    with torch.no_grad():
        ref, times = published_sample(model, inputs, noise.clone())
    assert timing.times == times and times[1] == 0.8984375 and times[-1] == 0.09521484375 and len(times) == 10
    assert ours.dtype == torch.float32  # the noisy actions are integrated in float32, as published
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=0.05)  # bf16 SDPA vs eager softmax


def test_act_gives_chunks_of_five_that_are_deterministic_per_episode_and_query(policy):
    policy.start_episode(spec(trial=0, seed=7))
    first = policy.act([observation(0, spec(0).key)])[0]
    second = policy.act([observation(0, spec(0).key)])[0]
    assert first.actions.shape == (5, 7) and first.failures == [] and first.stop is None
    assert first.info["batch"] == 1 and first.info["flow_steps"] == 10 and first.info["expert_ms"] > 0
    assert not np.allclose(first.actions[:, :6], second.actions[:, :6])  # a new query draws new noise
    policy.start_episode(spec(trial=0, seed=7))  # the same episode again: the same actions, query by query
    np.testing.assert_array_equal(policy.act([observation(0, spec(0).key)])[0].actions, first.actions)
    np.testing.assert_array_equal(policy.act([observation(0, spec(0).key)])[0].actions, second.actions)
    policy.start_episode(spec(trial=0, seed=8))  # another seed: other noise
    assert not np.allclose(policy.act([observation(0, spec(0).key)])[0].actions[:, :6], first.actions[:, :6])
    policy.end_episode(spec(0).key)
    with pytest.raises(ValueError, match="before start_episode"):
        policy.act([observation(0, spec(0).key)])


def test_batched_sampling_equals_one_by_one(policy):
    specs = [spec(trial=t) for t in range(4)]
    obs = [observation(i, s.key) for i, s in enumerate(specs)]
    for s in specs:
        policy.start_episode(s)
    batched = policy.sample(obs)
    for s in specs:
        policy.start_episode(s)
    single = np.concatenate([policy.sample([o]) for o in obs])
    assert batched.shape == (4, 5, 7)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert policy.last_timing.prefill_s > 0 and policy.last_timing.expert_s > 0


def test_batches_group_prompts_of_one_length(policy):
    obs = [Observation(text, episode="e") for text in INSTRUCTIONS]
    keys = [policy.batch_key(o) for o in obs]
    lengths = []
    assert keys[0] == policy.batch_key(Observation(INSTRUCTIONS[0], episode="other"))
    assert len(set(keys)) > 1  # these instructions tokenize to different lengths
    for text, key in zip(INSTRUCTIONS, keys):
        o = Observation(text, episode="e", images=observation(0, "e").images)
        lengths.append(policy.prompt.inputs([o], "cpu", "float32")["input_ids"].shape[1] - key)
    assert len(set(lengths)) == 1  # the key is the prompt length up to a constant


# -- un-normalization and the gripper --------------------------------------------------------------------
def published_unnormalize(normalized, stats):
    mask = stats.get("mask", np.ones_like(stats["q01"], dtype=bool))
    high, low = np.array(stats["q99"]), np.array(stats["q01"])
    return np.where(mask, 0.5 * (normalized + 1) * (high - low) + low, normalized)


def test_libero_unnormalizes_with_the_mask_then_binarizes_at_half_and_inverts(policy):
    stats = json.loads((REPO / "nora_bench" / "data" / "nora15_libero_stats.json").read_text())
    entry = stats["libero_object_no_noops"]["action"]
    # The packaged q01/q99 are NORA's published LIBERO bounds; the mask leaves the gripper out.
    assert entry["q01"] == NORA_BOUNDS["libero_object"]["low"] and entry["q99"] == NORA_BOUNDS["libero_object"]["high"]
    assert entry["mask"] == [True] * 6 + [False]
    rng = np.random.default_rng(0)
    chunk = rng.uniform(-1, 1, (5, 7))
    chunk[:, -1] = [0.2, 0.7, 0.45, 0.55, 0.05]  # the model's gripper, in [0, 1] (1 = open in the data)
    out = policy.to_chunk(chunk)
    expect = published_unnormalize(chunk, entry)
    expect[:, -1] = np.sign(2 * (expect[:, -1] - 0.0) / (1.0 - 0.0) - 1) * -1.0  # normalize_gripper + invert
    np.testing.assert_allclose(out.actions, expect, atol=1e-12)
    assert out.actions[:, -1].tolist() == [1.0, -1.0, 1.0, -1.0, 1.0]  # LIBERO: -1 open, +1 close
    # NORA's un-normalization (no mask) would move the threshold: 0.2 -> 0.6 -> "open".
    assert policy.bounds.unnormalize(chunk)[0, -1] == pytest.approx(0.6)


def test_bridge_gripper_opens_above_half(ckpt):
    stats = {"bridge_orig": {"action": {"q01": [-0.03, -0.04, -0.03, -0.1, -0.1, -0.2, 0.0],
                                        "q99": [0.03, 0.04, 0.035, 0.1, 0.12, 0.2, 1.0],
                                        "mask": [True] * 6 + [False]}}}
    path = Path(str(ckpt) + "-bridge")
    if not path.exists():
        shutil.copytree(ckpt, path)
    (path / "norm_stats.json").write_text(json.dumps(stats))
    pol = build(preset(path, norm_stats="checkpoint", unnorm_key="bridge_orig", gripper="bridge"))
    chunk = np.zeros((5, 7))
    chunk[:, -1] = [0.2, 0.5, 0.51, 0.9, -0.3]
    out = pol.to_chunk(chunk).actions
    np.testing.assert_allclose(out[:, :6], published_unnormalize(chunk, stats["bridge_orig"]["action"])[:, :6])
    # SimplerEnv wrapper: 2 * (g > 0.5) - 1 (+1 open); the WidowX convention here: 1 open, 0 closed.
    assert out[:, -1].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]


def test_non_finite_output_ends_the_episode_with_its_reason(policy):
    chunk = np.zeros((5, 7))
    chunk[2, 3] = np.nan
    out = policy.to_chunk(chunk)
    assert out.stop and "non-finite" in out.stop and out.failures == [out.stop]


def test_bad_presets_fail_in_one_line(ckpt, tmp_path):
    with pytest.raises(UserError, match="unknown gripper"):
        build(preset(ckpt, gripper="franka"))
    with pytest.raises(UserError, match="no model.safetensors"):
        build(preset(tmp_path))
    with pytest.raises(UserError, match="unknown unnorm_key 'libero_90_no_noops'.*libero_10_no_noops"):
        build(preset(ckpt, unnorm_key="libero_90_no_noops"))


def test_presets_exist_with_the_published_settings():
    from nora_bench.config import load_policy_preset

    for suite in ("spatial", "object", "goal", "10"):
        p = load_policy_preset(f"nora15-libero-{suite}")
        assert (p["kind"], p["checkpoint"], p["unnorm_key"]) == ("nora15", "declare-lab/nora-1.5-libero",
                                                                  f"libero_{suite}_no_noops")
        assert (p["norm_stats"], p["gripper"], p["num_steps"], p["dtype"]) == ("nora15_libero", "libero", 10, "bf16")
    p = load_policy_preset("nora15")
    assert (p["checkpoint"], p["norm_stats"], p["unnorm_key"], p["gripper"]) == (
        "declare-lab/nora-1.5", "hub:declare-lab/nora", "bridge_orig", "bridge")
    proc = run_cli("policies")
    assert proc.returncode == 0 and all(f"nora15-libero-{s}" in proc.stdout for s in ("spatial", "object", "goal", "10"))


# -- through the harness, on the real LIBERO simulator -------------------------------------------------
def test_tiny_nora15_drives_libero_through_the_cli(ckpt, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "libero_object", "--policy", "nora15-libero-object", "--checkpoint", str(ckpt),
                   "--dtype", "fp32", "--tasks", "0", "--trials", "1", "--workers", "1", "--max-steps", "10",
                   "--no-video", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((out / "config.yaml").read_text())
    resolved = config["policy"]["resolved"]
    assert resolved["checkpoint_dir"] == str(ckpt) and resolved["vlm_config_dir"] == str(ckpt / "vlm")
    assert resolved["bounds"] == "nora15_libero:libero_object_no_noops" and resolved["mask"][-1] is False
    assert resolved["dtype"] == "float32"
    [rec] = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert rec["termination"] in ("step_limit", "success"), rec
    assert rec["env_steps"] == 10 and rec["queries"] == 2 and rec["error"] is None  # chunks of 5, all executed
    info = rec["policy_info"]  # each query's sampling cost, aggregated over the episode's 2 queries
    assert info["flow_steps"]["n"] == 2 and info["flow_steps"]["min"] == 10 and info["prefill_ms"]["min"] > 0
