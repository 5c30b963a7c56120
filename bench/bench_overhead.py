"""Harness overhead: episodes through nora-bench (1 Ray worker) vs a plain LIBERO loop doing the
same episodes, steps, renders and videos the way the reference scripts do. Target ratio <= 1.05.

    .venv/bin/python bench/bench_overhead.py [--episodes 3] [--steps 120]
"""

import argparse
import time

import common  # noqa: F401  (sets up paths and rendering)


def plain_loop(episodes: int, steps: int) -> float:
    """The reference evaluation loop: one env, reset + init state, 10 settle steps, steps, mp4."""
    import os
    import tempfile

    import imageio.v2 as imageio
    import numpy as np
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    t = time.perf_counter()
    suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    task = suite.get_task(0)
    states = suite.get_task_init_states(0)
    env = OffScreenRenderEnv(bddl_file_name=os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file),
                             camera_heights=256, camera_widths=256, camera_names=["agentview"])
    env.seed(0)
    dummy = np.array([0, 0, 0, 0, 0, 0, -1.0])
    with tempfile.TemporaryDirectory() as d:
        for ep in range(episodes):
            env.reset()
            obs = env.set_init_state(states[ep])
            frames = []
            for _ in range(10):
                obs, _, done, _ = env.step(dummy)
            frames.append(obs["agentview_image"][::-1, ::-1])
            for _ in range(steps):
                obs, _, done, _ = env.step(dummy)
                frames.append(obs["agentview_image"][::-1, ::-1])
                if done:
                    break
            imageio.mimwrite(f"{d}/{ep}.mp4", frames, fps=20)
    env.close()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    rows = []
    for r in range(a.rounds):  # alternate the two sides so machine noise hits both alike
        plain = plain_loop(a.episodes, a.steps)
        harness = common.harness_run("libero_spatial", "zero-agentview", "0", a.episodes, a.steps, workers=1)
        rows.append((r, f"{plain:.1f}", f"{harness:.1f}", f"{harness / plain:.3f}"))
    common.table(rows, ("round", "plain loop s", "nora-bench s", "ratio"))
    ratios = [float(r[3]) for r in rows]
    print(f"harness/plain wall-time ratio: best {min(ratios):.3f}, mean {sum(ratios) / len(ratios):.3f} "
          f"({a.episodes} episodes x {a.steps} steps, agentview 256x256 + mp4; Ray start-up included; target <= 1.05)")


if __name__ == "__main__":
    main()
