"""The NORA serving path: a random-weight model of NORA's shape (Qwen2.5-VL built with
nora_bench/policies/tiny_nora.py's processor and config, at a chosen size; nothing downloaded), NORA's
real prompt (nora_bench/policies/nora_prompt.py: a 224x224 image + instruction), fixed-length decoding;
queries/s and generated tokens/s at batch 1, 4, 16, 32, 64, side by side for:

- `generate` with the dynamic cache (what nora_bench/policies/nora.py runs today);
- `generate` with a static cache (`cache_implementation="static"`), compiled with `torch.compile`
  when `--compile` (the default on CUDA; on CPU compiling takes minutes, so it is opt-in).

    .venv/bin/python bench/bench_nora_serving.py --size small --batches 1,4 --tokens 8      # CPU, minutes
    .venv/bin/python bench/bench_nora_serving.py --size 3b --device cuda --dtype bf16     # a GPU machine

Sizes: `tiny` (tiny_nora's test model), `small` (hidden 256, 4 layers, vision depth 4), `3b` (NORA's
backbone, Qwen2.5-VL-3B: hidden 2048, 36 layers, vision depth 32). Its output, latency per batch, is the
`--latency-ms A+B*b` curve bench/plan.py takes. Not yet measured on a GPU (docs/performance.md).
Left out for time: computing the prompt's image tokens once per batch.
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np

SIZES = {
    "tiny": {},
    "small": {"text": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                           num_key_value_heads=2), "mrope": [4, 6, 6],
              "vision": dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, fullatt_block_indexes=[3])},
    "3b": {"text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                        num_key_value_heads=2), "mrope": [16, 24, 24],
           "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                          fullatt_block_indexes=[7, 15, 23, 31])},
}


def build(size: str, device: str, dtype: str):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from nora_bench.policies.tiny_nora import build_processor, model_config

    config = model_config()
    spec = SIZES[size]
    if spec:
        for k, v in spec["text"].items():
            setattr(config.text_config, k, v)
        config.text_config.layer_types = ["full_attention"] * config.text_config.num_hidden_layers
        config.text_config.rope_parameters = {**config.text_config.rope_parameters, "mrope_section": spec["mrope"]}
        for k, v in spec["vision"].items():
            setattr(config.vision_config, k, v)
        config.vision_config.out_hidden_size = config.text_config.hidden_size
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
    return model, build_processor()


def measure(model, prompt, batch: int, tokens: int, mode: str, reps: int, device: str, dtype: str) -> float:
    """Seconds per batch of `batch` queries, each decoding exactly `tokens` tokens."""
    import torch

    from nora_bench.types import Observation

    rng = np.random.default_rng(batch)
    obs = [Observation("put the black bowl on the plate", f"e{i}",
                       {"agentview": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)}) for i in range(batch)]
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    if mode != "dynamic":
        kw["cache_implementation"] = "static"
    times = []
    for rep in range(reps + 1):  # the first call warms up (and compiles)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        inputs = prompt.inputs(obs, device, dtype)
        with torch.inference_mode():
            model.generate(**inputs, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        if rep:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="fp32 on CPU, bf16 on CUDA by default")
    ap.add_argument("--batches", default="1,4,16,32,64")
    ap.add_argument("--tokens", type=int, default=30, help="generated tokens per query (a NORA-LONG chunk: ~30)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the static-cache forward (default: on CUDA only)")
    args = ap.parse_args()
    import torch

    from nora_bench.policies.nora_prompt import NoraPrompt
    from nora_bench.types import ActionSpec

    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    dtype = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}.get(dtype, dtype)
    compile_ = args.compile if args.compile is not None else args.device == "cuda"
    model, processor = build(args.size, args.device, dtype)
    prompt = NoraPrompt(processor, "agentview", ActionSpec())
    params = sum(p.numel() for p in model.parameters())
    modes = ["dynamic", "static+compile" if compile_ else "static"]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        row = [batch]
        per = {}
        for mode in modes:
            if mode == "static+compile":
                model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
            s = measure(model, prompt, batch, args.tokens, mode, args.reps, args.device, dtype)
            if mode == "static+compile":
                model.forward = model.__class__.forward.__get__(model)
            per[mode] = s
            row += [f"{s * 1000:.0f}", f"{batch / s:.1f}", f"{batch * args.tokens / s:.0f}"]
        row.append(f"{per[modes[0]] / per[modes[1]]:.2f}x")
        rows.append(tuple(row))
        print(f"  done: batch {batch}", flush=True)
    print(f"\nNORA-shaped model, size {args.size} ({params / 1e6:.1f} M parameters, random weights), {args.device} "
          f"{dtype}, {args.tokens} tokens per query, median of {args.reps}")
    header = ["batch"]
    for mode in modes:
        header += [f"{mode} ms/batch", "queries/s", "tokens/s"]
    common.table(rows, tuple(header + [f"{modes[1]} speed-up"]))


if __name__ == "__main__":
    main()
