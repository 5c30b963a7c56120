"""Control-loop pacing of the WidowX env against the stand-in robot server, side by side.

Runs the same episode loop (step_action + observation + a simulated policy latency) twice in one
run: paced by `WidowXEnv` (sleep to a fixed tick grid) and paced the naive way (sleep one period
after every step). Prints achieved rate / target rate and jitter for both.

    PYTHONPATH=. python bench/widowx_pacing.py [--hz 5] [--steps 40] [--policy-ms 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nora_bench.envs.widowx import UnattendedOperator, WidowXEnv, pacing_stats  # noqa: E402
from nora_bench.envs.widowx_protocol import WidowXClient  # noqa: E402
from nora_bench.episode import EpisodeSpec  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def harness_loop(port: int, hz: float, steps: int, policy_s: float) -> dict:
    env = WidowXEnv(UnattendedOperator())
    spec = EpisodeSpec(suite="bench", task_id=0, trial=0, init_state=0, seed=0, max_steps=steps, env="widowx",
                       num_steps_wait=0, cameras=("agentview",),
                       env_options=(("robot_host", "127.0.0.1"), ("robot_port", port), ("control_hz", hz),
                                    ("task", {"instruction": "bench"})))
    try:
        env.reset(spec)
        for _ in range(steps):
            time.sleep(policy_s)
            env.step(np.array([0.001, 0, 0, 0, 0, 0, 1.0]))
        info = env.episode_info()
    finally:
        env.close()
    return {k: info[k] for k in ("achieved_hz", "jitter_ms_std", "jitter_ms_max", "late_steps", "obs_rtt_ms_mean")}


def naive_loop(port: int, hz: float, steps: int, policy_s: float) -> dict:
    client = WidowXClient("127.0.0.1", port)
    ticks = []
    try:
        client.init({}, 256)
        client.reset()
        for _ in range(steps):
            time.sleep(policy_s)
            ticks.append(time.perf_counter())
            client.step_action(np.array([0.001, 0, 0, 0, 0, 0, 1.0]))
            client.get_observation()
            time.sleep(1.0 / hz)  # sleep one period per step, whatever the step cost
    finally:
        client.close()
    return pacing_stats(ticks, hz)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hz", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--policy-ms", type=float, default=60.0, help="simulated policy latency per step")
    a = ap.parse_args()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-m", "nora_bench.cli", "widowx-sim-server", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "listening on ..."
        paced = harness_loop(port, a.hz, a.steps, a.policy_ms / 1000)
        naive = naive_loop(port, a.hz, a.steps, a.policy_ms / 1000)
    finally:
        server.terminate()
        server.wait()
    print(f"target {a.hz:g} Hz, {a.steps} steps, policy latency {a.policy_ms:g} ms, stand-in server on loopback")
    print(f"{'loop':<24}{'achieved Hz':>12}{'ratio':>8}{'jitter std ms':>15}{'jitter max ms':>15}{'late':>6}")
    for name, s in (("WidowXEnv (tick grid)", paced), ("naive sleep(period)", naive)):
        print(f"{name:<24}{s['achieved_hz']:>12.3f}{s['achieved_hz'] / a.hz:>8.3f}{s['jitter_ms_std']:>15.2f}"
              f"{s['jitter_ms_max']:>15.2f}{s['late_steps']:>6}")
    print(f"achieved/target rate: harness {paced['achieved_hz'] / a.hz:.3f}, naive {naive['achieved_hz'] / a.hz:.3f} "
          f"(harness / naive = {paced['achieved_hz'] / naive['achieved_hz']:.2f}x)")
    print(json.dumps({"bench": "widowx_pacing", "hz": a.hz, "steps": a.steps, "policy_ms": a.policy_ms,
                      "harness": paced, "naive": naive, "python": platform.python_version(), "host": platform.node(),
                      "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
