"""Camera economy: env steps/s rendering agentview only vs agentview + wrist vs nothing.

    .venv/bin/python bench/bench_cameras.py [--steps 40] [--rounds 3]
"""

import argparse
import time

import common  # noqa: F401


def main():
    import numpy as np

    from nora_bench.envs import make_env
    from nora_bench.envs.libero_options import libero_spec_fields
    from nora_bench.episode import EpisodeSpec

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    configs = {"agentview": ("agentview",), "agentview+wrist": ("agentview", "wrist"), "none (state only)": ()}
    rates: dict[str, list[float]] = {k: [] for k in configs}
    # One process can hold one LIBERO env (GL context): build each config in turn, interleave rounds.
    for r in range(a.rounds):
        for name, cams in configs.items():
            env = make_env("libero")
            spec = EpisodeSpec(**libero_spec_fields(suite="libero_spatial", benchmark="libero_spatial", task_id=0, trial=0, init_state=0,
                               seed=0, max_steps=a.steps, cameras=cams))
            env.reset(spec)
            for _ in range(3):  # warm-up (numba, GL)
                env.step(env.dummy_action)
            t = time.perf_counter()
            for _ in range(a.steps):
                env.step(np.array([0.1, 0, 0, 0, 0, 0, -1.0]))
            rates[name].append(a.steps / (time.perf_counter() - t))
            env.close()
    base = np.median(rates["agentview+wrist"])
    rows = [(k, f"{np.median(v):.2f}", f"{np.median(v) / base:.2f}x") for k, v in rates.items()]
    common.table(rows, ("cameras rendered", "steps/s (median)", "vs agentview+wrist"))


if __name__ == "__main__":
    main()
