"""A tiny NORA checkpoint built locally: real Qwen2.5-VL classes, saved like a published checkpoint.

For tests and benchmarks (no hub here). The folder holds a `Qwen2_5_VLForConditionalGeneration`
(2 layers, hidden 64, vision depth 2), a Qwen2.5-VL processor whose byte-level BPE tokenizer puts
Qwen's special tokens and `<robot_action_k>` on their real ids (151643.., 151665..153712), a
generation config, and a FAST+ tokenizer in `fast_tokenizer/`; it loads through the same calls
as a published NORA checkpoint.

With `emit=[k1, k2, ...]` the weights make greedy decoding emit `<robot_action_k1>`,
`<robot_action_k2>`, ... then `<|im_end|>`, whatever the image and instruction: every layer's
attention and MLP output is zeroed, so the last hidden state is the current token's embedding,
and the LM head maps each token of the chain to the next. Without `emit` the weights are
random, with the LM head scaled up on action tokens (outputs differ per observation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ACTION_TOKEN_MIN = 151665
N_ACTION_TOKENS = 2048
VOCAB_SIZE = ACTION_TOKEN_MIN + N_ACTION_TOKENS  # 153713
# Qwen2.5's special tokens in id order from 151643.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
FIRST_SPECIAL_ID = 151643
IM_END_ID = 151645
HIDDEN = 64

# The Qwen2-VL chat format (system prompt, vision markers around the image pad), written here.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SENTENCES = [
    "put the black bowl on the plate", "pick up the alphabet soup and place it in the basket",
    "open the middle drawer of the cabinet", "turn on the stove", "put the cream cheese in the bowl",
    "You are a helpful assistant.", "push the plate to the front of the stove", "put the carrot in pot",
    "move the banana close to the pot", "put the wine bottle on top of the cabinet",
]


def build_text_tokenizer():
    """A Qwen2 tokenizer (byte-level BPE) whose special and action tokens sit on Qwen/NORA's real ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_SENTENCES * 4, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    # Unreachable filler entries so that the special tokens land on their real ids.
    for i in range(len(vocab), FIRST_SPECIAL_ID):
        vocab[f"<|filler_{i}|>"] = i
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_tokens([AddedToken(t, special=True) for t in QWEN_SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(f"<robot_action_{k}>", special=False) for k in range(N_ACTION_TOKENS)])
    tok.add_special_tokens({"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"})
    assert len(tok) == VOCAB_SIZE, len(tok)
    assert tok.convert_tokens_to_ids("<robot_action_0>") == ACTION_TOKEN_MIN
    return tok


def build_processor():
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                               tokenizer=build_text_tokenizer(), chat_template=CHAT_TEMPLATE)


def model_config():
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=FIRST_SPECIAL_ID, eos_token_id=IM_END_ID, pad_token_id=FIRST_SPECIAL_ID),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                           fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def _chain_weights(model, chain: list[int]) -> None:
    """Make greedy decoding follow chain[0] -> chain[1] -> ... regardless of context."""
    import torch

    if len(chain) - 1 > HIDDEN:
        raise ValueError(f"a chain of {len(chain) - 1} steps needs more than hidden size {HIDDEN} directions")
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError("the tokens to emit must be distinct (the next token depends only on the current one)")
    lm = model.model.language_model
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        lm.norm.weight.fill_(1.0)
        emb = lm.embed_tokens.weight
        head = model.lm_head.weight
        head.zero_()
        for i, (cur, nxt) in enumerate(zip(chain[:-1], chain[1:])):
            emb[cur].zero_()
            emb[cur, i] = 1.0
            head[nxt, i] = 10.0


def build_tiny_nora(path: str | Path, *, emit: list[int] | None = None, fast=None, time_horizon: int = 1,
                    seed: int = 0, norm_stats: dict | None = None, max_new_tokens: int = 64) -> Path:
    """Save a tiny NORA checkpoint folder at `path` (see the module docstring) and return it.

    `emit`: FAST+ token ids (0..2047) greedy decoding must produce; `fast`: the FastTokenizer to
    ship in fast_tokenizer/ (default: one fitted on smooth random chunks); `norm_stats`: written
    as norm_stats.json (OpenVLA layout) when given.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    processor = build_processor()
    model = Qwen2_5_VLForConditionalGeneration(model_config()).eval()
    if emit is not None:
        # The generation prompt ends with "assistant\n": the chain starts at its last token.
        last = processor.tokenizer("<|im_start|>assistant\n")["input_ids"][-1]
        _chain_weights(model, [last] + [ACTION_TOKEN_MIN + int(k) for k in emit] + [IM_END_ID])
    else:
        with torch.no_grad():
            # Larger action-token rows: greedy decoding picks action tokens (and <|im_end|> now and then).
            model.lm_head.weight[ACTION_TOKEN_MIN:] *= 5.0
            model.lm_head.weight[IM_END_ID] *= 5.5
    model.save_pretrained(path)
    processor.save_pretrained(path)
    GenerationConfig(bos_token_id=FIRST_SPECIAL_ID, eos_token_id=[IM_END_ID, FIRST_SPECIAL_ID],
                     pad_token_id=FIRST_SPECIAL_ID, do_sample=False, max_new_tokens=max_new_tokens).save_pretrained(path)
    if fast is None:
        fast = fit_demo_fast(seed=seed)
    fast.save(path / "fast_tokenizer")
    if norm_stats is not None:
        (path / "norm_stats.json").write_text(json.dumps(norm_stats, indent=1))
    return path


def smooth_chunks(n: int, horizon: int, seed: int = 0, dim: int = 7) -> list[np.ndarray]:
    """Smooth random normalized chunks in [-1, 1] (random walks around a random level)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.uniform(-0.9, 0.9, (1, dim))
        walk = np.cumsum(rng.normal(0, 0.06, (horizon, dim)), axis=0)
        out.append(np.clip(base + walk, -1, 1))
    return out


def fit_demo_fast(seed: int = 0):
    """A FAST+ tokenizer (vocab 2048, scale 10) fitted on smooth random chunks of horizons 1 and 5."""
    from nora_bench.policies.fast import FastTokenizer

    chunks = smooth_chunks(1500, 5, seed) + smooth_chunks(1500, 1, seed + 1)
    # A few wide chunks stretch the coefficient range past 127, like the published one (min_token -354):
    # then some coefficients are multi-byte characters, as in the real tokenizer.
    chunks += [c * 8.0 for c in smooth_chunks(100, 5, seed + 2)]
    return FastTokenizer.fit(chunks, scale=10, vocab_size=2048)
