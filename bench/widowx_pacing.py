"""Control-loop pacing of the WidowX env against the stand-in robot server, side by side.

Runs the same episode loop (step_action + observation + a simulated policy latency) in one run:
paced by `WidowXEnv` (sleep to a fixed tick grid) against a server that JPEG-encodes `full_image`
as bridge_data_robot's does, the same against a server that sends the raw array (older servers),
and paced the naive way (sleep one period after every step). Prints achieved rate / target rate,
jitter, observation round trip and the client's JPEG decode time per observation (its share of
the control period), then the decode cost alone on the stand-in's frames (cv2, as agentlace).

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
from nora_bench.envs.widowx_protocol import WidowXClient, decode_full_image, jpeg_to_mat, mat_to_jpeg  # noqa: E402
from nora_bench.episode import EpisodeSpec  # noqa: E402

STATS = ("achieved_hz", "jitter_ms_std", "jitter_ms_max", "late_steps", "obs_rtt_ms_mean", "jpeg_decode_ms_mean",
         "jpeg_decode_ms_max", "image_wire_kb_mean", "image_encoding")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def harness_loop(port: int, hz: float, steps: int, policy_s: float) -> tuple[dict, list[np.ndarray]]:
    env = WidowXEnv(UnattendedOperator())
    spec = EpisodeSpec(suite="bench", task_id=0, trial=0, init_state=0, seed=0, max_steps=steps, env="widowx",
                       num_steps_wait=0, cameras=("agentview",),
                       env_options=(("robot_host", "127.0.0.1"), ("robot_port", port), ("control_hz", hz),
                                    ("task", {"instruction": "bench"})))
    frames = []
    try:
        frames.append(env.reset(spec).images["agentview"])
        for _ in range(steps):
            time.sleep(policy_s)
            frames.append(env.step(np.array([0.001, 0, 0, 0, 0, 0, 1.0])).observation.images["agentview"])
        info = env.episode_info()
    finally:
        env.close()
    return {k: info.get(k) for k in STATS}, frames


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


def decode_cost(frames: list[np.ndarray], repeats: int = 5) -> dict:
    """The client's decode per observation on the stand-in's frames (encoded once, as the server does)."""
    blobs = [mat_to_jpeg(f) for f in frames]
    times, checked = [], []
    for _ in range(repeats):
        for b in blobs:
            t = time.perf_counter()
            jpeg_to_mat(b)
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            decode_full_image(b)  # + the marker and header checks the harness adds
            checked.append(time.perf_counter() - t)
    return {"frames": len(blobs), "kb_mean": round(float(np.mean([len(b) for b in blobs])) / 1024, 1),
            "decode_ms_mean": round(1000 * float(np.mean(times)), 3), "decode_ms_p99": round(1000 * float(np.percentile(times, 99)), 3),
            "checked_ms_mean": round(1000 * float(np.mean(checked)), 3)}


def with_server(encoding: str, fn):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-m", "nora_bench.cli", "widowx-sim-server", "--port", str(port),
                               "--full-image-encoding", encoding], env=env, stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "listening on ..."
        return fn(port)
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hz", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--policy-ms", type=float, default=60.0, help="simulated policy latency per step")
    a = ap.parse_args()
    policy_s = a.policy_ms / 1000
    jpeg, frames = with_server("jpeg", lambda port: harness_loop(port, a.hz, a.steps, policy_s))
    raw, _ = with_server("raw", lambda port: harness_loop(port, a.hz, a.steps, policy_s))
    naive = with_server("jpeg", lambda port: naive_loop(port, a.hz, a.steps, policy_s))
    cost = decode_cost(frames)
    period_ms = 1000 / a.hz
    print(f"target {a.hz:g} Hz ({period_ms:g} ms period), {a.steps} steps, policy latency {a.policy_ms:g} ms, "
          "stand-in server on loopback")
    print(f"{'loop':<30}{'achieved Hz':>12}{'ratio':>8}{'jitter std ms':>15}{'jitter max ms':>15}{'late':>6}"
          f"{'obs rtt ms':>12}{'decode ms':>11}")
    for name, s in (("WidowXEnv, JPEG server", jpeg), ("WidowXEnv, raw-array server", raw),
                    ("naive sleep(period), JPEG", naive)):
        print(f"{name:<30}{s['achieved_hz']:>12.3f}{s['achieved_hz'] / a.hz:>8.3f}{s['jitter_ms_std']:>15.2f}"
              f"{s['jitter_ms_max']:>15.2f}{s['late_steps']:>6}{s.get('obs_rtt_ms_mean') or float('nan'):>12.2f}"
              f"{s.get('jpeg_decode_ms_mean') or 0:>11.3f}")
    print(f"JPEG decode per observation ({cost['frames']} stand-in frames 640x480, {cost['kb_mean']} KB): "
          f"mean {cost['decode_ms_mean']:.3f} ms, p99 {cost['decode_ms_p99']:.3f} ms, with the harness's checks "
          f"{cost['checked_ms_mean']:.3f} ms = {cost['checked_ms_mean'] / period_ms:.4f} of the control period")
    print(f"achieved/target rate: JPEG {jpeg['achieved_hz'] / a.hz:.3f}, raw {raw['achieved_hz'] / a.hz:.3f}, "
          f"naive {naive['achieved_hz'] / a.hz:.3f}; observation round trip JPEG / raw = "
          f"{jpeg['obs_rtt_ms_mean'] / raw['obs_rtt_ms_mean']:.2f}x")
    print(json.dumps({"bench": "widowx_pacing", "hz": a.hz, "steps": a.steps, "policy_ms": a.policy_ms,
                      "harness_jpeg": jpeg, "harness_raw": raw, "naive": naive, "jpeg_decode": cost,
                      "python": platform.python_version(), "host": platform.node(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
