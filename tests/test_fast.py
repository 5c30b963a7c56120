"""FAST+ tokenizer: round trips, the published folder layout, and every decode failure class."""

import json

import numpy as np
import pytest
from scipy.fft import dct, idct

from nora_bench import UserError
from nora_bench.policies.fast import BAD_BYTES, NO_TOKENS, OUT_OF_RANGE, WRONG_LENGTH, FastDecodeError, FastTokenizer
from nora_bench.policies.tiny_nora import fit_demo_fast, smooth_chunks

SCALE = 10


@pytest.fixture(scope="module")
def fast():
    return fit_demo_fast(seed=0)


def test_fit_matches_the_published_parameters(fast):
    assert fast.scale == SCALE and fast.vocab_size == 2048
    assert fast.bpe.get_vocab_size() == 2048
    # min_token is the smallest quantized coefficient of the training chunks
    train = smooth_chunks(1500, 5, 0) + smooth_chunks(1500, 1, 1) + [8.0 * c for c in smooth_chunks(100, 5, 2)]
    assert fast.min_token < -128  # multi-byte characters in play, as with the published min_token -354
    assert fast.min_token == min(int(np.around(dct(c, axis=0, norm="ortho") * SCALE).min()) for c in train)


@pytest.mark.parametrize("horizon", [1, 5])
def test_round_trip_error_is_bounded_by_the_quantization_step(fast, horizon):
    wide = [4.0 * c for c in smooth_chunks(10, horizon, seed=7 + horizon)]  # coefficients beyond one byte
    assert max(np.abs(fast.coefficients(c) - fast.min_token).max() for c in wide) > 127
    for chunk in smooth_chunks(50, horizon, seed=123 + horizon) + wide:
        ids = fast.encode(chunk)
        assert ids and all(0 <= i < 2048 for i in ids)
        out = fast.decode(ids, horizon, 7)
        assert out.shape == (horizon, 7)
        # Each DCT coefficient is off by at most half a step (0.5 / scale); the orthonormal inverse
        # DCT keeps the L2 error of each dim's coefficient vector, so per entry at most sqrt(T) * 0.05.
        err = np.abs(out - chunk)
        assert err.max() <= 0.5 / SCALE * np.sqrt(horizon) + 1e-12
        assert np.linalg.norm(out - chunk, axis=0).max() <= 0.5 / SCALE * np.sqrt(horizon) + 1e-12
        # and it is exactly the quantized DCT, inverted
        expect = idct(np.around(dct(chunk, axis=0, norm="ortho") * SCALE) / SCALE, axis=0, norm="ortho")
        np.testing.assert_allclose(out, expect, atol=1e-12)
        # a decoded chunk encodes to the same tokens again
        assert fast.encode(out) == ids


def test_horizon_comes_from_the_tokenizer_when_not_passed(fast):
    chunk = smooth_chunks(1, 5, seed=5)[0]
    fast5 = FastTokenizer(fast.bpe, scale=fast.scale, vocab_size=fast.vocab_size, min_token=fast.min_token,
                          action_dim=7, time_horizon=5)
    np.testing.assert_allclose(fast5.decode(fast.encode(chunk)), fast.decode(fast.encode(chunk), 5, 7))
    with pytest.raises(ValueError, match="time_horizon and action_dim"):
        fast.decode(fast.encode(chunk))


def _fail(fast, ids, horizon=5):
    with pytest.raises(FastDecodeError) as e:
        fast.decode(ids, horizon, 7)
    return e.value


def test_every_failure_class_is_detected_with_a_reason(fast):
    ids = fast.encode(smooth_chunks(1, 5, seed=7)[0])
    e = _fail(fast, [])
    assert e.kind == NO_TOKENS and "no action tokens" in str(e)
    e = _fail(fast, ids + [2048])
    assert e.kind == OUT_OF_RANGE and "2048" in str(e) and "0..2047" in str(e)
    assert _fail(fast, [-1] + ids).kind == OUT_OF_RANGE
    e = _fail(fast, ids[:-1])
    assert e.kind == WRONG_LENGTH and "expected 5 x 7 = 35" in str(e)
    assert _fail(fast, ids + ids).kind == WRONG_LENGTH
    assert _fail(fast, ids, horizon=1).kind == WRONG_LENGTH  # a NORA-LONG chunk read as NORA's
    # a token that is one byte of a multi-byte character (a coefficient >= 128 after the shift)
    vocab = fast.bpe.get_vocab()
    partial = next(i for i in sorted(vocab.values()) if "\ufffd" in fast.bpe.decode([i]))
    e = _fail(fast, [partial] * 35)
    assert e.kind == BAD_BYTES


def test_coefficients_below_min_token_are_clamped_like_the_reference(fast):
    chunk = np.full((1, 7), -1.0)
    chunk[0, 0] = fast.min_token / SCALE - 5.0  # far below the trained range
    out = fast.decode(fast.encode(chunk), 1, 7)
    assert out[0, 0] == pytest.approx(fast.min_token / SCALE)
    np.testing.assert_allclose(out[0, 1:], -1.0, atol=0.05)


def test_fit_refuses_a_vocab_smaller_than_the_coefficient_range():
    with pytest.raises(ValueError, match="smaller than the coefficient range"):
        FastTokenizer.fit([np.array([[-10.0] * 7]), np.array([[10.0] * 7])], scale=10, vocab_size=100)


def test_save_and_load_keep_the_published_layout(fast, tmp_path):
    folder = fast.save(tmp_path / "fast")
    assert {p.name for p in folder.iterdir()} == {"processor_config.json", "tokenizer.json", "tokenizer_config.json",
                                                  "special_tokens_map.json"}
    config = json.loads((folder / "processor_config.json").read_text())
    assert config == {"action_dim": None, "min_token": fast.min_token, "processor_class": "UniversalActionProcessor",
                      "scale": 10.0, "time_horizon": None, "vocab_size": 2048}
    loaded = FastTokenizer.load(folder, time_horizon=5, action_dim=7)
    for chunk in smooth_chunks(10, 5, seed=9):
        assert loaded.encode(chunk) == fast.encode(chunk)
        np.testing.assert_array_equal(loaded.decode(fast.encode(chunk)), fast.decode(fast.encode(chunk), 5, 7))


def test_loads_a_folder_written_the_way_the_published_processor_writes_it(fast, tmp_path):
    """The published files come from transformers' save_pretrained of a PreTrainedTokenizerFast wrapping
    tokenizers' ByteLevelBPETokenizer, plus processor_config.json with an auto_map to remote code."""
    from tokenizers.implementations import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe._tokenizer.model = fast.bpe.model  # the same merges, in the published wrapper
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, clean_up_tokenization_spaces=False)
    folder = tmp_path / "published"
    hf.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({
        "action_dim": None, "auto_map": {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"},
        "min_token": fast.min_token, "processor_class": "UniversalActionProcessor", "scale": 10, "time_horizon": None,
        "vocab_size": 2048}))
    loaded = FastTokenizer.load(folder, time_horizon=5, action_dim=7)
    for chunk in smooth_chunks(10, 5, seed=11):
        text = "".join(map(chr, np.maximum(loaded.coefficients(chunk).flatten() - fast.min_token, 0)))
        ids = hf(text)["input_ids"]  # what the published processor's __call__ produces
        assert loaded.encode(chunk) == ids
        assert hf.decode(ids) == loaded.bpe.decode(ids)  # what its decode starts from


def test_load_names_missing_files(tmp_path):
    with pytest.raises(UserError, match="missing processor_config.json, tokenizer.json"):
        FastTokenizer.load(tmp_path)
