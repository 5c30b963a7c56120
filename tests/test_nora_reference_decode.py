"""`decode_fallback: reference` is the published FAST+ decode, exactly, class by class, on tiny NORA models.

`published_decode` is written as physical-intelligence/fast `processing_action_tokenizer.py` decodes
(its BPE is a transformers `PreTrainedTokenizerFast`): decode the ids, `ord` + min_token, reshape to
(-1, action_dim), assert (T, D), zeros on any exception, idct / scale. NORA (declare-lab/nora 6b18c23,
`inference/nora.py`) passes it every id in 151665..153712, shifted, and un-normalizes what it returns.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.fft import idct
from test_nora import BOUNDS, long_preset, observation, pick_chunk, spec  # noqa: F401  (fixtures below)

from nora_bench.envs.libero import LIBERO_ACTION_SPEC
from nora_bench.policies import make_policy
from nora_bench.policies.tiny_nora import build_tiny_nora, fit_demo_fast


def published_decode(folder, tokens, time_horizon=5, action_dim=7):
    from transformers import PreTrainedTokenizerFast

    bpe_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), clean_up_tokenization_spaces=False)
    scale, min_token = 10.0, int(__import__("json").loads((folder / "processor_config.json").read_text())["min_token"])
    try:
        decoded_tokens = bpe_tokenizer.decode(tokens)
        decoded_dct_coeff = np.array(list(map(ord, decoded_tokens))) + min_token
        decoded_dct_coeff = decoded_dct_coeff.reshape(-1, action_dim)
        assert decoded_dct_coeff.shape == (time_horizon, action_dim)
    except Exception:
        decoded_dct_coeff = np.zeros((time_horizon, action_dim))
    return idct(decoded_dct_coeff / scale, axis=0, norm="ortho")


def published_actions(normalized, key="libero_object"):
    low, high = np.array(BOUNDS[key]["low"]), np.array(BOUNDS[key]["high"])
    a = 0.5 * (normalized + 1) * (high - low) + low
    a[..., -1] = np.sign(2 * a[..., -1] - 1) * -1.0
    a[..., -1] = np.where(a[..., -1] >= 0.0, 1.0, a[..., -1])
    return a


@pytest.fixture(scope="module")
def fast():
    return fit_demo_fast(seed=0)


@pytest.fixture(scope="module")
def small_fast():
    """A FAST+ BPE with fewer than 2048 tokens: some action ids then name no token (unknown ids)."""
    from nora_bench.policies.fast import FastTokenizer
    from nora_bench.policies.tiny_nora import smooth_chunks

    chunks = smooth_chunks(800, 5, 0) + [c * 8.0 for c in smooth_chunks(50, 5, 2)]
    return FastTokenizer.fit(chunks, scale=10, vocab_size=1200)


def lead_byte_token(fast) -> int:
    """A BPE token that is a lone UTF-8 lead byte (the first half of a two-byte character)."""
    from tokenizers import decoders  # noqa: F401

    for tid in range(fast.bpe.get_vocab_size()):
        raw = fast.bpe.id_to_token(tid)
        if raw is not None and len(raw) == 1 and fast.bpe.decode([tid]) == "\ufffd":
            return tid
    raise AssertionError("no lone lead-byte token in the BPE")


def cases(fast, small_fast):
    chunk, ids = pick_chunk(fast, 5, seed=10)
    single = [i for i in ids if len(fast.bpe.decode([i])) == 1]
    k = ids.index(single[0])
    bad = ids[:k] + [lead_byte_token(fast)] + ids[k + 1:]
    _, small_ids = pick_chunk(small_fast, 5, seed=10)
    unknown = small_fast.bpe.get_vocab_size() + 3
    assert unknown <= 2047, "the small BPE must leave action ids without a token"
    return {"bad_bytes": (fast, bad, 64), "id_out_of_range": (small_fast, small_ids[:2] + [unknown] + small_ids[2:], 64),
            "wrong_length": (fast, ids[:-1], 64), "truncated": (fast, ids, len(ids) - 1)}


@pytest.mark.parametrize("kind", ["bad_bytes", "id_out_of_range", "wrong_length", "truncated"])
def test_reference_fallback_executes_what_the_published_decode_gives(tmp_path, fast, small_fast, kind):
    fast, emit, max_new = cases(fast, small_fast)[kind]
    path = build_tiny_nora(tmp_path / kind, emit=emit, fast=fast, time_horizon=5, max_new_tokens=max_new)
    policy = make_policy(long_preset(path, decode_fallback="reference"), LIBERO_ACTION_SPEC)
    policy.start_episode(spec())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generated = policy.generate([observation(0)])[0]
        out = policy.to_chunk(observation(0, episode=spec().key), generated)
    action_ids = [i - 151665 for i in generated if 151665 <= i <= 153712]
    want = published_actions(published_decode(path / "fast_tokenizer", action_ids))
    np.testing.assert_array_equal(out.actions, want)
    assert len(out.failures) == 1 and out.failures[0].startswith(f"FAST+ decode failed ({kind}") and out.stop is None
    assert out.info == {"decode_failure": kind}  # counted per class in the record's policy_info
    if kind == "bad_bytes":
        assert np.abs(want[:, :6]).max() > 100  # a cut character decodes to a huge value, executed as such
    if kind == "id_out_of_range":
        assert np.abs(want).max() < 2 and want.any()  # the rest decodes to the real chunk
    if kind in ("wrong_length", "truncated"):
        np.testing.assert_array_equal(want, published_actions(np.zeros((5, 7))))  # zeros only on an exception
    truncation = [w for w in caught if "max_new_tokens" in str(w.message)]
    assert bool(truncation) == (kind == "truncated")
    if kind == "truncated":
        assert f"max_new_tokens={max_new}" in out.failures[0]
