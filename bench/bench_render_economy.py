"""Render economy under open-loop chunk execution, measured side by side in one run.

Chunk rule `all` with 5-action chunks (NORA-LONG in NORA's LIBERO script): the policy sees one
observation in five, so the protocol renders only those unless the video wants every step.
Configurations, run round-robin on one real LIBERO env (agentview, 256x256 like the reference):

  render-all   every step rendered, frames thrown away (what the protocol did without the economy)
  no-video     only the frames the policy sees are rendered
  video-steps  mp4 with a frame per env step (--video-frames steps, the default)
  video-query  mp4 with a frame per policy query (--video-frames queries)

Prints env steps per second of the control loop (reset and settle excluded, video encoding
included) and each configuration's speed relative to render-all, plus what is needed to
reproduce the figures.

    PYTHONPATH=. python bench/bench_render_economy.py [--steps 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from nora_bench.envs import make_env
from nora_bench.envs.libero_options import libero_spec_fields
from nora_bench.episode import EpisodeSpec, ProtocolRun
from nora_bench.policies.base import ActionChunk, FunctionPolicy
from nora_bench.run.rundir import package_versions
from nora_bench.video import VideoWriter

CHUNK = 5
CONFIGS = ("render-all", "no-video", "video-steps", "video-query")


def chunk_policy(obs) -> ActionChunk:
    # A slow circle of the end effector: the scene changes, nothing is grasped.
    t = time.perf_counter()
    a = np.zeros((CHUNK, 7))
    a[:, 0], a[:, 1], a[:, 6] = 0.3 * np.cos(t), 0.3 * np.sin(t), -1.0
    return ActionChunk(a)


def run_once(env, config: str, steps: int, trial: int, size: int) -> tuple[int, float, int]:
    video = config.startswith("video")
    spec = EpisodeSpec(**libero_spec_fields(suite="libero_spatial", benchmark="libero_spatial", task_id=0, trial=trial,
                       init_state=trial, seed=trial, max_steps=steps, chunk_exec="all", camera_size=size,
                       cameras=("agentview",), video_cameras=("agentview",),
                       video_frames="queries" if config == "video-query" else "steps"))
    writer = VideoWriter() if video else None
    sink = writer.add if video else (lambda frame: None) if config == "render-all" else None
    t0 = time.perf_counter()
    out = ProtocolRun(env, spec, FunctionPolicy(chunk_policy), sink).run()
    frames = writer.frames if writer else 0
    if writer:
        writer.finish()
    total = time.perf_counter() - t0
    loop = total - out.timings["reset_s"] - out.timings["settle_s"]
    return out.env_steps, loop, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="env steps per episode")
    ap.add_argument("--rounds", type=int, default=2, help="episodes per configuration (round-robin)")
    ap.add_argument("--size", type=int, default=256, help="camera size")
    args = ap.parse_args()

    env = make_env("libero")
    totals = {c: [0, 0.0, 0] for c in CONFIGS}
    try:
        run_once(env, "no-video", CHUNK, 0, args.size)  # build the env, warm up (numba, GL)
        for r in range(args.rounds):
            for c in CONFIGS:
                steps, secs, frames = run_once(env, c, args.steps, r, args.size)
                totals[c][0] += steps
                totals[c][1] += secs
                totals[c][2] += frames
    finally:
        env.close()

    base = totals["render-all"][0] / totals["render-all"][1]
    print(json.dumps({"bench": "render_economy", "chunk_rule": "all", "chunk": CHUNK, "steps": args.steps,
                      "rounds": args.rounds, "camera": f"agentview {args.size}x{args.size}",
                      "task": "libero_spatial/0", "cpus": os.cpu_count(), "host": platform.node(),
                      "mujoco_gl": os.environ.get("MUJOCO_GL"), "versions": package_versions(),
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    print(f"{'config':<12} {'env steps':>9} {'frames':>7} {'seconds':>8} {'steps/s':>8} {'vs render-all':>14}")
    for c in CONFIGS:
        steps, secs, frames = totals[c]
        print(f"{c:<12} {steps:>9} {frames:>7} {secs:>8.2f} {steps / secs:>8.2f} {steps / secs / base:>13.2f}x")


if __name__ == "__main__":
    main()
