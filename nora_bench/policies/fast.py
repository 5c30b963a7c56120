"""FAST+ action tokenizer (DCT + byte-level BPE), our own implementation on scipy.fft and HF `tokenizers`.

Follows the published physical-intelligence/fast processor (REFERENCE.md section 3) so that its
files load here without `trust_remote_code`:

- encode a normalized chunk a[T, D]: DCT-II along time (orthonormal), times `scale`, rounded;
  flattened row-major (all dims of frequency 0, then frequency 1, ...); each integer v becomes the
  character chr(max(v - min_token, 0)); the string is encoded by a byte-level BPE.
- decode: BPE decode to characters, ord(c) + min_token, reshape to (T, D), divide by `scale`,
  inverse DCT.

Unlike the reference, which prints decode errors and returns zeros, `decode` raises
`FastDecodeError` with the failure class and a reason; callers choose the fallback.
`decode_reference` is the published decode, exactly, plus the failure classes it passed over.

Folder layout (as published): processor_config.json (scale, vocab_size, min_token, action_dim,
time_horizon, processor_class), tokenizer.json (the BPE), tokenizer_config.json,
special_tokens_map.json. We do not write the reference's `auto_map` (we ship no remote code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from scipy.fft import dct, idct
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from nora_bench import UserError

PROCESSOR_CONFIG = "processor_config.json"
TOKENIZER_FILE = "tokenizer.json"

# Failure classes of a decode (the first word of every FastDecodeError reason).
NO_TOKENS = "no_tokens"
OUT_OF_RANGE = "id_out_of_range"
BAD_BYTES = "bad_bytes"  # tokens that do not decode to whole characters (a cut multi-byte char)
WRONG_LENGTH = "wrong_length"
TRUNCATED = "truncated"  # generation stopped at max_new_tokens before the chunk was complete (set by the policy)
FAILURE_CLASSES = (NO_TOKENS, OUT_OF_RANGE, BAD_BYTES, WRONG_LENGTH, TRUNCATED)

_REPLACEMENT_CHAR = "\ufffd"  # what byte-level decoding yields for invalid UTF-8


class FastDecodeError(ValueError):
    """Tokens that do not decode to an action chunk; `kind` is one of FAILURE_CLASSES."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class FastTokenizer:
    """A FAST+ tokenizer: the BPE plus the quantization parameters of the published processor."""

    bpe: Tokenizer
    scale: float = 10.0
    vocab_size: int = 2048
    min_token: int = 0
    action_dim: int | None = None
    time_horizon: int | None = None

    # -- encode / decode ------------------------------------------------------------------------
    def coefficients(self, chunk: np.ndarray) -> np.ndarray:
        """Quantized DCT coefficients (T, D) of a normalized chunk, before the min_token shift."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2:
            raise ValueError(f"FAST+ encodes one chunk of shape (T, D), got shape {chunk.shape}")
        return np.around(dct(chunk, axis=0, norm="ortho") * self.scale).astype(np.int64)

    def encode(self, chunk: np.ndarray) -> list[int]:
        """FAST+ token ids (0..vocab_size-1) of one normalized chunk (T, D)."""
        coeff = self.coefficients(chunk).flatten()
        text = "".join(map(chr, np.maximum(coeff - self.min_token, 0)))
        return self.bpe.encode(text).ids

    def decode(self, ids: Iterable[int], time_horizon: int | None = None, action_dim: int | None = None) -> np.ndarray:
        """The normalized chunk (T, D) that `ids` encode; raises FastDecodeError when they encode none."""
        t = time_horizon or self.time_horizon
        d = action_dim or self.action_dim
        if not t or not d:
            raise ValueError("FAST+ decode needs time_horizon and action_dim (pass them or set them on the tokenizer)")
        ids = [int(i) for i in ids]
        if not ids:
            raise FastDecodeError(NO_TOKENS, "the model produced no action tokens")
        n_vocab = self.bpe.get_vocab_size()
        bad = [i for i in ids if not 0 <= i < n_vocab]
        if bad:
            raise FastDecodeError(OUT_OF_RANGE, f"action token id {bad[0]} is outside the FAST+ vocabulary 0..{n_vocab - 1}")
        text = self.bpe.decode(ids, skip_special_tokens=False)
        if _REPLACEMENT_CHAR in text:
            raise FastDecodeError(BAD_BYTES, f"{len(ids)} tokens do not decode to whole characters (a cut multi-byte sequence)")
        if len(text) != t * d:
            raise FastDecodeError(WRONG_LENGTH, f"{len(ids)} tokens decode to {len(text)} coefficients, "
                                                f"expected {t} x {d} = {t * d}")
        coeff = (np.fromiter(map(ord, text), dtype=np.int64, count=len(text)) + self.min_token).reshape(t, d)
        return idct(coeff / self.scale, axis=0, norm="ortho")

    def decode_reference(self, ids: Iterable[int], time_horizon: int | None = None,
                         action_dim: int | None = None) -> tuple[np.ndarray, list[str]]:
        """What the published FAST+ processor's `decode` returns, with the failure classes it passed over.

        physical-intelligence/fast `processing_action_tokenizer.py`: ids the BPE does not know are
        dropped silently and the rest decoded; a cut multi-byte character decodes to U+FFFD, i.e. a
        coefficient of about 65,000 (kept: huge actions); only an exception (a wrong number of
        coefficients, no tokens) gives the all-zero chunk.
        """
        t = time_horizon or self.time_horizon
        d = action_dim or self.action_dim
        ids = [int(i) for i in ids]
        n_vocab = self.bpe.get_vocab_size()
        known = [i for i in ids if 0 <= i < n_vocab]
        classes = [OUT_OF_RANGE] if len(known) != len(ids) else []
        text = self.bpe.decode(known, skip_special_tokens=False)
        if _REPLACEMENT_CHAR in text:
            classes.append(BAD_BYTES)
        if len(text) != t * d:
            classes.append(NO_TOKENS if not text else WRONG_LENGTH)
            return np.zeros((t, d)), classes  # the reference's except branch: zeros, then the idct of zeros
        coeff = (np.fromiter(map(ord, text), dtype=np.int64, count=len(text)) + self.min_token).reshape(t, d)
        return idct(coeff / self.scale, axis=0, norm="ortho"), classes

    # -- fitting ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, chunks: Iterable[np.ndarray], scale: float = 10.0, vocab_size: int = 2048, *,
            time_horizon: int | None = None, action_dim: int | None = None) -> "FastTokenizer":
        """Train the BPE on normalized chunks (each (T, D)) as the published `fit` does."""
        coeffs = [np.around(dct(np.asarray(c, dtype=np.float64), axis=0, norm="ortho").flatten() * scale).astype(np.int64)
                  for c in chunks]
        if not coeffs:
            raise ValueError("FAST+ fit needs at least one chunk")
        allc = np.concatenate(coeffs)
        lo, hi = int(allc.min()), int(allc.max())
        if hi - lo > vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the coefficient range {hi - lo}: "
                             "raise vocab_size or lower scale")
        bpe = _empty_bpe()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
            # Every quantized value is a starting symbol, seen in training or not.
            initial_alphabet=[chr(i) for i in range(hi - lo + 1)], max_token_length=10000)
        bpe.train_from_iterator(("".join(map(chr, c - lo)) for c in coeffs), trainer=trainer)
        return cls(bpe, scale=scale, vocab_size=vocab_size, min_token=lo, action_dim=action_dim,
                   time_horizon=time_horizon)

    # -- files --------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.bpe.save(str(folder / TOKENIZER_FILE))
        config = {"action_dim": self.action_dim, "min_token": self.min_token,
                  "processor_class": "UniversalActionProcessor", "scale": self.scale,
                  "time_horizon": self.time_horizon, "vocab_size": self.vocab_size}
        (folder / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"clean_up_tokenization_spaces": False, "model_max_length": 1000000000000000019884624838656,
             "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2) + "\n")
        (folder / "special_tokens_map.json").write_text("{}\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, time_horizon: int | None = None,
             action_dim: int | None = None) -> "FastTokenizer":
        """Load a FAST+ folder (ours or the published physical-intelligence/fast files)."""
        folder = Path(folder)
        missing = [n for n in (PROCESSOR_CONFIG, TOKENIZER_FILE) if not (folder / n).is_file()]
        if missing:
            raise UserError(f"{folder} is not a FAST+ tokenizer folder: missing {', '.join(missing)} "
                            "(expected the physical-intelligence/fast layout)")
        config = json.loads((folder / PROCESSOR_CONFIG).read_text())
        try:
            return cls(Tokenizer.from_file(str(folder / TOKENIZER_FILE)), scale=float(config["scale"]),
                       vocab_size=int(config["vocab_size"]), min_token=int(config["min_token"]),
                       action_dim=action_dim or config.get("action_dim"),
                       time_horizon=time_horizon or config.get("time_horizon"))
        except KeyError as e:
            raise UserError(f"{folder / PROCESSOR_CONFIG} lacks the key {e.args[0]!r} of a FAST+ processor config") from None


def _empty_bpe() -> Tokenizer:
    """A byte-level BPE configured like tokenizers' ByteLevelBPETokenizer (what FAST+ uses)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok
