"""A tiny NORA-1.5 checkpoint built locally, in the published layout, for tests and benchmarks.

The full architecture at toy size: a real `Qwen2_5_VLForConditionalGeneration` (2 layers, hidden
256, 16 heads of 16, 2 key/value heads, vision depth 2) and our action expert with the published
settings (hidden 0.375 x 256 = 96, 6 heads of 16, 3 query heads per key/value head), random weights. The folder holds what a
published NORA-1.5 checkpoint holds, `model.safetensors` with every weight under the published
names (saved with safetensors' `save_model`, as `PyTorchModelHubMixin` saves it: tied weights
stored once), plus what the published code fetches from other repos, here in subfolders: the VLM's
config in `vlm/` (published: declare-lab/nora-long) and the NORA processor in `processor/`
(published: declare-lab/nora, here tiny_nora's tokenizer with Qwen's real special/action ids).
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_HIDDEN = 256


def tiny_vlm_config(tie_word_embeddings: bool = True):
    from nora_bench.policies.tiny_nora import model_config

    cfg = model_config()
    text = cfg.text_config
    text.hidden_size, text.num_attention_heads, text.num_key_value_heads = TINY_HIDDEN, 16, 2
    text.intermediate_size = 512
    cfg.vision_config.out_hidden_size = TINY_HIDDEN
    # Qwen2.5-VL-3B ties its LM head to the token embedding; the tiny one does too, by default.
    cfg.tie_word_embeddings = tie_word_embeddings
    text.tie_word_embeddings = tie_word_embeddings
    return cfg


def build_tiny_nora15(path: str | Path, *, seed: int = 0, norm_stats: dict | None = None,
                      tie_word_embeddings: bool = True, expert_gain: float = 1.0) -> Path:
    """Save a tiny NORA-1.5 checkpoint folder at `path` (see the module docstring) and return it.

    `norm_stats` (OpenVLA layout) is written as norm_stats.json when given; `expert_gain` scales
    the output projection (larger: actions vary more with the observation).
    """
    import torch
    from safetensors.torch import save_model

    from nora_bench.policies.nora15_expert import Nora15Model
    from nora_bench.policies.tiny_nora import build_processor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = tiny_vlm_config(tie_word_embeddings)
    model = Nora15Model(cfg).eval()
    if expert_gain != 1.0:
        with torch.no_grad():
            model.action_out_proj.weight.mul_(expert_gain)
    save_model(model, str(path / "model.safetensors"))
    cfg.save_pretrained(path / "vlm")
    build_processor().save_pretrained(path / "processor")
    if norm_stats is not None:
        (path / "norm_stats.json").write_text(json.dumps(norm_stats, indent=1))
    return path
