"""NORA / NORA-LONG policy with tiny real Qwen2.5-VL checkpoints built at test time (no hub).

The checkpoints are saved with save_pretrained and loaded through the same calls as a published
one. Expected actions are computed here independently: FAST+ quantization with scipy, bounds read
from the JSON data file, and the reference scripts' gripper steps written out again.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.fft import dct, idct

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from nora_bench import UserError  # noqa: E402
from nora_bench.envs.base import Observation  # noqa: E402
from nora_bench.envs.libero import LIBERO_ACTION_SPEC  # noqa: E402
from nora_bench.envs.widowx import WIDOWX_ACTION_SPEC  # noqa: E402
from nora_bench.episode import EpisodeSpec  # noqa: E402
from nora_bench.policies import check_preset, make_policy  # noqa: E402
from nora_bench.policies.fast import FastTokenizer  # noqa: E402
from nora_bench.policies.tiny_nora import build_tiny_nora, fit_demo_fast, smooth_chunks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BOUNDS = json.loads((REPO / "nora_bench" / "data" / "nora_libero_action_bounds.json").read_text())
BRIDGE_STATS = {"bridge_orig": {"action": {
    "q01": [-0.03, -0.04, -0.03, -0.1, -0.1, -0.2, 0.0], "q99": [0.03, 0.04, 0.035, 0.1, 0.12, 0.2, 1.0],
    "mask": [True] * 6 + [False]}}}
INSTRUCTIONS = ["put the black bowl on the plate", "open the middle drawer", "turn on the stove", "put the carrot in pot"]


def run_cli(*args, env_extra=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "nora_bench.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def expected_libero(chunk, key):
    """Reference pipeline, written out: quantized FAST+ chunk, NORA LIBERO bounds, LIBERO gripper steps."""
    q = idct(np.around(dct(chunk, axis=0, norm="ortho") * 10) / 10, axis=0, norm="ortho")
    low, high = np.array(BOUNDS[key]["low"]), np.array(BOUNDS[key]["high"])
    a = 0.5 * (q + 1) * (high - low) + low
    a[..., -1] = np.sign(2 * (a[..., -1] - 0.0) / (1.0 - 0.0) - 1)  # normalize_gripper_action(binarize=True)
    a[..., -1] = a[..., -1] * -1.0  # invert_gripper_action
    a[..., -1] = np.where(a[..., -1] >= 0.0, 1.0, a[..., -1])
    return a


def pick_chunk(fast, horizon, seed, gripper_signs=True):
    """A chunk whose FAST+ tokens are distinct (the tiny model's next token depends on the current one)."""
    for s in range(seed, seed + 500):
        chunk = smooth_chunks(1, horizon, seed=s)[0]
        if gripper_signs and horizon > 1:
            chunk[:, -1] = np.linspace(-0.8, 0.8, horizon) * (1 if s % 2 else -1)  # the gripper changes its mind
        ids = fast.encode(chunk)
        if len(set(ids)) == len(ids):
            return chunk, ids
    raise AssertionError("no chunk with distinct tokens")


def observation(i, episode="ep", size=256):
    rng = np.random.default_rng(100 + i)
    return Observation(INSTRUCTIONS[i % len(INSTRUCTIONS)], episode=episode,
                       images={"agentview": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)})


def spec(trial=0, chunk_exec="all"):
    """What a policy learns about an episode at its start."""
    return EpisodeSpec(suite="libero_object", task_id=0, trial=trial, init_state=trial, seed=trial, max_steps=10,
                       chunk_exec=chunk_exec).episode_info()


@pytest.fixture(scope="module")
def fast():
    return fit_demo_fast(seed=0)


@pytest.fixture(scope="module")
def long_ckpt(tmp_path_factory, fast):
    chunk, ids = pick_chunk(fast, 5, seed=10)
    path = build_tiny_nora(tmp_path_factory.mktemp("ckpt") / "nora-long-tiny", emit=ids, fast=fast, time_horizon=5)
    return path, chunk, ids


@pytest.fixture(scope="module")
def short_ckpt(tmp_path_factory, fast):
    chunk, ids = pick_chunk(fast, 1, seed=40)
    path = build_tiny_nora(tmp_path_factory.mktemp("ckpt") / "nora-tiny", emit=ids, fast=fast, time_horizon=1,
                           norm_stats=BRIDGE_STATS)
    return path, chunk, ids


@pytest.fixture(scope="module")
def broken_ckpt(tmp_path_factory, fast, long_ckpt):
    """Emits one token too few for a chunk of 5: every query is a decode failure (wrong length)."""
    _, _, ids = long_ckpt
    return build_tiny_nora(tmp_path_factory.mktemp("ckpt") / "nora-broken", emit=ids[:-1], fast=fast, time_horizon=5)


def long_preset(path, **kw):
    return {"kind": "nora", "name": "tiny-long", "checkpoint": str(path), "time_horizon": 5, "norm_stats": "nora_libero",
            "unnorm_key": "libero_object", "gripper": "libero", "cameras": ["agentview"], **kw}


# -- exact actions --------------------------------------------------------------------------------
def test_nora_long_returns_exactly_the_chunk_its_tokens_encode(long_ckpt):
    path, chunk, ids = long_ckpt
    policy = make_policy(long_preset(path), LIBERO_ACTION_SPEC)
    assert policy.requirements.cameras == ("agentview",)
    assert policy.info["fast_tokenizer"].endswith("fast_tokenizer") and policy.info["dtype"] == "float32"
    policy.start_episode(spec())
    generated = policy.generate([observation(0)])[0]
    assert generated == [151665 + i for i in ids] + [151645]  # the chosen action tokens, then <|im_end|>
    [out] = policy.act([observation(1)])
    assert out.failures == [] and out.stop is None
    expect = expected_libero(chunk, "libero_object")
    assert out.actions.shape == (5, 7)
    np.testing.assert_allclose(out.actions, expect, atol=1e-9)
    assert set(out.actions[:, -1]) == {-1.0, 1.0}  # both gripper commands occur in this chunk


def test_nora_bridge_uses_checkpoint_norm_stats_and_leaves_the_gripper(short_ckpt):
    path, chunk, _ = short_ckpt
    policy = make_policy({"kind": "nora", "name": "tiny", "checkpoint": str(path), "time_horizon": 1,
                          "norm_stats": "checkpoint", "unnorm_key": "bridge_orig", "gripper": "bridge"},
                         WIDOWX_ACTION_SPEC)
    obs = observation(2)
    # the WidowX env names its third-person image full_image: the same image serves
    widowx_obs = Observation(obs.instruction, episode="w", images={"full_image": obs.images["agentview"]})
    [out, out_widowx] = policy.act([obs, widowx_obs])
    np.testing.assert_array_equal(out.actions, out_widowx.actions)
    q = idct(np.around(dct(chunk, axis=0, norm="ortho") * 10) / 10, axis=0, norm="ortho")
    low, high = np.array(BRIDGE_STATS["bridge_orig"]["action"]["q01"]), np.array(BRIDGE_STATS["bridge_orig"]["action"]["q99"])
    # the published code never applies the mask: the gripper is un-normalized like the rest
    np.testing.assert_allclose(out.actions, 0.5 * (q + 1) * (high - low) + low, atol=1e-12)
    assert out.actions.shape == (1, 7) and out.failures == []
    with pytest.raises(ValueError, match=r"no 'agentview' image.*cameras: \[agentview\]"):
        policy.act([Observation("x", episode="w", images={"robot0_eye_in_hand": obs.images["agentview"]})])


def test_lerobot_stats_file_as_bounds(short_ckpt, tmp_path):
    path, chunk, _ = short_ckpt
    stats = {"action": {"min": [-1, -2, -3, -0.5, -0.5, -0.5, 0], "max": [1, 2, 3, 0.5, 0.5, 0.5, 1],
                        "mean": [0] * 7, "std": [1] * 7}, "observation.state": {"min": [0], "max": [1]}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    policy = make_policy({"kind": "nora", "name": "tiny", "checkpoint": str(path), "norm_stats": str(tmp_path / "stats.json"),
                          "gripper": "bridge"}, WIDOWX_ACTION_SPEC)
    [out] = policy.act([observation(3)])
    q = idct(np.around(dct(chunk, axis=0, norm="ortho") * 10) / 10, axis=0, norm="ortho")
    lo, hi = np.array(stats["action"]["min"], float), np.array(stats["action"]["max"], float)
    np.testing.assert_allclose(out.actions, (q + 1) / 2 * (hi - lo) + lo, atol=1e-12)
    assert policy.info["bounds"].startswith("lerobot:")


# -- batching --------------------------------------------------------------------------------------
def test_batched_inference_gives_the_same_actions_as_one_by_one(tmp_path, fast):
    # Random weights: outputs differ per observation, so the comparison means something.
    path = build_tiny_nora(tmp_path / "random", fast=fast, seed=3)
    policy = make_policy({"kind": "nora", "name": "rand", "checkpoint": str(path), "time_horizon": 1,
                          "norm_stats": "nora_libero", "unnorm_key": "libero_spatial", "max_new_tokens": 10},
                         LIBERO_ACTION_SPEC)
    observations = [observation(i, episode=f"ep{i}") for i in range(6)]
    for i, o in enumerate(observations):
        policy.start_episode(spec(trial=i))
    batched = policy.generate(observations)
    single = [policy.generate([o])[0] for o in observations]
    assert batched == single
    assert len({tuple(b) for b in batched}) > 1  # not the same answer for everyone
    assert any(151665 <= t <= 153712 for b in batched for t in b)
    chunks_b = policy.act(observations)
    chunks_s = [policy.act([o])[0] for o in observations]
    for b, s in zip(chunks_b, chunks_s):
        np.testing.assert_array_equal(b.actions, s.actions)
        assert b.failures == s.failures


# -- decode failures -------------------------------------------------------------------------------
def test_decode_failure_fallbacks(long_ckpt, broken_ckpt):
    path, chunk, ids = long_ckpt
    ref = make_policy(long_preset(broken_ckpt, decode_fallback="reference"), LIBERO_ACTION_SPEC)
    ref.start_episode(spec())
    [out] = ref.act([observation(0)])
    assert len(out.failures) == 1 and "wrong_length" in out.failures[0] and "fallback reference" in out.failures[0]
    assert out.stop is None
    # the reference's all-zero normalized chunk: the midpoint of the bounds, gripper 0.5 -> sign 0 -> close
    expect = expected_libero(np.zeros((5, 7)), "libero_object")
    np.testing.assert_allclose(out.actions, expect, atol=1e-12)
    assert (out.actions[:, -1] == 1.0).all()

    fail = make_policy(long_preset(broken_ckpt, decode_fallback="fail"), LIBERO_ACTION_SPEC)
    fail.start_episode(spec())
    [out] = fail.act([observation(0)])
    assert out.stop and "wrong_length" in out.stop and len(out.failures) == 1

    # hold: no motion, the gripper as last executed (rule "all": the chunk's last row)
    hold = make_policy(long_preset(path, decode_fallback="hold"), LIBERO_ACTION_SPEC)
    hold.start_episode(spec())
    obs = observation(0)
    no_tokens = hold.to_chunk(obs, [872, 151645])
    assert "no_tokens" in no_tokens.failures[0]
    np.testing.assert_array_equal(no_tokens.actions, np.tile([0, 0, 0, 0, 0, 0, -1.0], (5, 1)))  # still open
    [good] = hold.act([obs])
    assert good.failures == []
    after = hold.to_chunk(obs, [151665 + i for i in ids[:3]])
    np.testing.assert_array_equal(after.actions[:, :6], 0.0)
    assert (after.actions[:, -1] == good.actions[-1, -1]).all()
    # rule "first": the first row is the one executed
    hold.start_episode(spec(trial=1, chunk_exec="first"))
    o1 = observation(0, episode=spec(trial=1).key)
    [good] = hold.act([o1])
    assert (hold.to_chunk(o1, []).actions[:, -1] == good.actions[0, -1]).all()


def test_unknown_unnorm_key_lists_the_available_ones(long_ckpt):
    with pytest.raises(UserError, match="unknown unnorm_key 'libero_obj'.*available: libero_10, libero_90, libero_goal"):
        check_preset(long_preset(long_ckpt[0], unnorm_key="libero_obj"))
    with pytest.raises(UserError, match="has no norm_stats.json"):
        check_preset(long_preset(long_ckpt[0], norm_stats="checkpoint", unnorm_key="bridge_orig"))


def test_checkpoint_without_action_tokens_is_refused(long_ckpt, tmp_path):
    path = long_ckpt[0]
    plain = tmp_path / "plain-qwen"
    shutil.copytree(path, plain)
    tok = json.loads((plain / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if not t["content"].startswith("<robot_action_")]
    (plain / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(UserError, match=r"has no <robot_action_k> tokens.*151665\.\.153712"):
        make_policy(long_preset(plain), LIBERO_ACTION_SPEC)


def test_hub_revision_is_read_from_the_cache_path(tmp_path):
    from nora_bench.policies.nora import hub_revision

    snap = tmp_path / "models--declare-lab--nora" / "snapshots" / "0123abc"
    assert hub_revision(snap) == "0123abc" and hub_revision(snap / "fast_tokenizer") == "0123abc"
    assert hub_revision(tmp_path) is None


def test_bad_options_are_named():
    from nora_bench.policies.nora import resolve_runtime

    assert resolve_runtime("auto", "auto", "auto") == ("cpu", "float32", "sdpa")  # no GPU here
    assert resolve_runtime("cpu", "bf16", "eager") == ("cpu", "bfloat16", "eager")
    with pytest.raises(UserError, match="--dtype 'int3'"):
        resolve_runtime("cpu", "int3", "auto")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_runtime("cuda", "auto", "auto")
    with pytest.raises(UserError, match="flash-attn package and a CUDA device"):
        resolve_runtime("cpu", "auto", "flash_attention_2")


def test_a_preset_without_downloadable_weights_fails_fast_in_one_line():
    proc = run_cli("run", "libero_object", "--policy", "nora-long-libero-object", "--tasks", "0", "--trials", "1",
                   env_extra={"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "cannot download checkpoint 'declare-lab/nora-long-finetuned-libero-object'" in lines[0]
    assert "--checkpoint PATH" in lines[0]
    proc = run_cli("run", "libero_object", "--policy", "zero", "--dtype", "bf16", timeout=120)
    assert proc.returncode == 2 and "--dtype does not apply to policy preset 'zero'" in proc.stderr


def test_presets_exist_with_their_keys_and_horizons():
    from nora_bench.config import load_policy_preset

    for suite in ("spatial", "object", "goal", "10"):
        long = load_policy_preset(f"nora-long-libero-{suite}")
        assert (long["time_horizon"], long["unnorm_key"], long["chunk_exec"]) == (5, f"libero_{suite}", "all")
        assert long["checkpoint"] == f"declare-lab/nora-long-finetuned-libero-{suite}"
        short = load_policy_preset(f"nora-libero-{suite}")
        assert (short["time_horizon"], short["unnorm_key"], short["gripper"]) == (1, f"libero_{suite}", "libero")
        assert f"libero_{suite}" in BOUNDS
    assert load_policy_preset("nora")["unnorm_key"] == "bridge_orig"
    assert load_policy_preset("nora-long")["time_horizon"] == 5


# -- through the harness, on the real LIBERO simulator ------------------------------------------------
def test_tiny_nora_long_drives_libero_through_the_cli(long_ckpt, tmp_path):
    path, chunk, _ = long_ckpt
    out = tmp_path / "run"
    proc = run_cli("run", "libero_object", "--policy", "nora-long-libero-object", "--checkpoint", str(path),
                   "--tasks", "0", "--trials", "1", "--workers", "1", "--max-steps", "10", "--no-video",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["policy"]["checkpoint"] == str(path) and config["policy"]["time_horizon"] == 5
    resolved = config["policy"]["resolved"]  # what the run used, recorded for reproduction
    assert resolved["checkpoint_dir"] == str(path) and resolved["fast_tokenizer_dir"] == str(path / "fast_tokenizer")
    assert resolved["bounds"] == "nora_libero:libero_object" and resolved["low"] == BOUNDS["libero_object"]["low"]
    assert (resolved["device"], resolved["dtype"], resolved["attn"]) == ("cpu", "float32", "sdpa")
    [rec] = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert rec["termination"] in ("step_limit", "success"), rec
    assert rec["checkpoint"] == str(path)
    assert rec["env_steps"] == 10 and rec["queries"] == 2  # chunks of 5, all executed
    assert rec["decode_failures"] == 0 and rec["error"] is None


def test_decode_failures_are_counted_in_episode_records(broken_ckpt, tmp_path):
    from nora_bench.config import RunConfig
    from nora_bench.results import load
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    preset = tmp_path / "broken.yaml"
    preset.write_text(yaml.safe_dump(long_preset(broken_ckpt, decode_fallback="reference", chunk_exec="all")))
    config = RunConfig.resolve(suite="libero_object", policy=str(preset), tasks="0", trials="0,1", max_steps=10,
                               video=False)
    Scheduler(config, RunDir(tmp_path / "ref"), ExecOptions(in_process=True)).run()
    df = load(tmp_path / "ref")
    assert len(df) == 2
    assert (df["queries"] == 2).all() and (df["decode_failures"] == 2).all() and (df["env_steps"] == 10).all()
    assert df["failure_reasons"].map(lambda r: all("wrong_length" in x for x in r) and len(r) == 2).all()

    preset.write_text(yaml.safe_dump(long_preset(broken_ckpt, decode_fallback="fail")))
    config = RunConfig.resolve(suite="libero_object", policy=str(preset), tasks="0", trials="1", max_steps=10,
                               video=False)
    Scheduler(config, RunDir(tmp_path / "fail"), ExecOptions(in_process=True)).run()
    [rec] = load(tmp_path / "fail").to_dict("records")
    assert rec["termination"] == "policy_stop" and rec["decode_failures"] == 1 and rec["env_steps"] == 0
    assert "wrong_length" in rec["error"]


def test_tiny_checkpoint_loads_like_a_published_one_with_the_real_token_ids(long_ckpt):
    from transformers import AutoConfig, AutoProcessor

    path = long_ckpt[0]
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    real_ids = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
                "<robot_action_0>": 151665, "<robot_action_1000>": 152665, "<robot_action_2047>": 153712}
    assert {t: tok.convert_tokens_to_ids(t) for t in real_ids} == real_ids
    config = AutoConfig.from_pretrained(path)
    assert type(config).__name__ == "Qwen2_5_VLConfig" and config.text_config.vocab_size == 153713
    assert (config.image_token_id, config.vision_start_token_id) == (151655, 151652)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"


def test_tokenizer_in_checkpoint_matches_the_emitted_chunk(long_ckpt):
    """The builder ships the FAST+ tokenizer it encoded with; decoding the emitted ids gives the chunk."""
    path, chunk, ids = long_ckpt
    tok = FastTokenizer.load(path / "fast_tokenizer", time_horizon=5, action_dim=7)
    np.testing.assert_allclose(tok.decode(ids), chunk, atol=0.5 / 10 * np.sqrt(5))


def test_bf16_batches_of_one_prompt_length_give_the_tokens_of_single_calls(tmp_path, fast):
    """In bf16 a left-padded batch need not equal single calls; `batch_key` (prompt token length) keeps
    padding out of every batch the policy actor forms (nora_bench/batching.py), and such a batch does."""
    path = build_tiny_nora(tmp_path / "random-bf16", fast=fast, seed=5)
    policy = make_policy({"kind": "nora", "name": "rand", "checkpoint": str(path), "time_horizon": 1, "dtype": "bf16",
                          "norm_stats": "nora_libero", "unnorm_key": "libero_spatial", "max_new_tokens": 8},
                         LIBERO_ACTION_SPEC)
    assert policy.dtype == "bfloat16"
    observations = [observation(i, episode=f"ep{i}") for i in range(8)]
    keys = [policy.batch_key(o) for o in observations]
    assert len(set(keys)) > 1  # the instructions have different token lengths
    assert keys == [policy.batch_key(observation(i)) for i in range(8)]  # the key depends on the prompt only
    groups: dict[int, list] = {}
    for o, k in zip(observations, keys):
        groups.setdefault(k, []).append(o)
    assert max(len(g) for g in groups.values()) > 1
    for group in groups.values():
        batched = policy.generate(group)
        single = [policy.generate([o])[0] for o in group]
        assert batched == single
    assert len({tuple(policy.generate([o])[0]) for o in observations}) > 1  # not the same answer for everyone
