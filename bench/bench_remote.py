"""Remote policies on loopback, measured side by side in one run.

1. Round trip: the same policy (no compute) queried in process vs through `nora-bench serve` in
   another process, 224x224 agentview + wrist images, state and prompt (openpi's LIBERO request):
   the overhead per query in ms, for openpi's protocol and vla-eval's (PNG images, its default,
   and raw), on real LIBERO frames. Target: openpi overhead under 3 ms (median).
2. Serving: 8 concurrent clients (openpi's own WebsocketClientPolicy, one thread each) against
   `nora-bench serve` with a policy of fixed cost per call (0.2 s), batched (--max-batch 8) vs
   unbatched (--max-batch 1): queries per second. Target: >= 3x.

    .venv/bin/python bench/bench_remote.py [--queries 200] [--clients 8] [--latency 0.2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def start_serve(preset: Path, protocol: str, *args: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "nora_bench.cli", "serve", "--policy", str(preset), "--protocol",
                             protocol, "--port", "0", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("serving"):
        proc.kill()
        raise SystemExit(f"serve did not start: {line!r}")
    return proc, int(line.split("ws://127.0.0.1:")[1].split()[0])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def libero_frames() -> dict:
    """A real LIBERO agentview and wrist frame (libero_spatial task 0, init state 0, after settling),
    upright and padded to 224x224 as openpi's LIBERO client sends them (PNG sizes depend on content)."""
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    from nora_bench.wire.layout import resize_with_pad

    suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    task = suite.get_task(0)
    env = OffScreenRenderEnv(bddl_file_name=str(Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file),
                             camera_heights=256, camera_widths=256)
    try:
        env.seed(0)
        env.reset()
        obs = env.set_init_state(suite.get_task_init_states(0)[0])
        for _ in range(10):
            obs, *_ = env.step([0.0] * 6 + [-1.0])
        return {name: resize_with_pad(np.ascontiguousarray(obs[key][::-1, ::-1]), 224, 224)
                for name, key in (("agentview", "agentview_image"), ("wrist", "robot0_eye_in_hand_image"))}
    finally:
        env.close()


FRAMES: dict = {}


def observation():
    from nora_bench.types import Observation

    if not FRAMES:
        FRAMES.update(libero_frames())
    images = dict(FRAMES)
    state = {"robot0_eef_pos": np.zeros(3), "robot0_eef_quat": np.array([0, 0, 0, 1.0]),
             "robot0_gripper_qpos": np.zeros(2)}
    return Observation("put the black bowl on the plate", "bench/task000/trial00", images, state)


def per_query_ms(act, obs, n: int) -> tuple[float, float]:
    """(median, 10th percentile) ms per query: the median is the figure; the 10th percentile
    shows what the code costs when the machine's other work leaves it alone."""
    for _ in range(5):  # warm up
        act([obs])
    times = []
    for _ in range(n):
        t = time.perf_counter()
        act([obs])
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), float(np.percentile(times, 10))


def round_trip(preset: Path, n: int) -> list[tuple[str, float]]:
    from bench.remote_policies import FixedCostPolicy
    from nora_bench.policies import make_policy
    from nora_bench.types import ActionSpec, EpisodeInfo

    spec, obs = ActionSpec(), observation()
    info = EpisodeInfo(obs.episode, "bench", 0, 0, 0, 0, obs.instruction)
    local = FixedCostPolicy()
    rows = [("in process", per_query_ms(local.act, obs, n))]
    for label, protocol, extra in (("openpi", "openpi", {}),
                                   ("vla-eval, PNG images (its default)", "vla-eval", {"send_wrist_image": True, "send_state": True}),
                                   ("vla-eval, raw images", "vla-eval", {"send_wrist_image": True, "send_state": True,
                                                                         "image_format": "raw"})):
        proc, port = start_serve(preset, protocol)
        try:
            policy = make_policy({"kind": "remote", "name": "bench", "url": f"ws://127.0.0.1:{port}",
                                  "protocol": protocol, **extra}, spec)
            policy.start_episode(info)
            rows.append((label, per_query_ms(policy.act, obs, n)))
            policy.end_episode(info.key)
            policy.close()
        finally:
            stop(proc)
    return rows


def serving(preset: Path, clients: int, per_client: int, max_batch: int) -> tuple[float, list[int]]:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    proc, port = start_serve(preset, "openpi", "--max-batch", str(max_batch), "--max-wait-ms", "20")
    obs = observation()
    request = {"observation/image": obs.images["agentview"], "observation/wrist_image": obs.images["wrist"],
               "observation/state": np.zeros(8), "prompt": obs.instruction}
    sizes: list[int] = []
    try:
        conns = [WebsocketClientPolicy("127.0.0.1", port) for _ in range(clients)]
        barrier = threading.Barrier(clients + 1)

        def client(c):
            barrier.wait()
            for _ in range(per_client):
                sizes.append(int(c.infer(request)["server_timing"]["batch_size"]))

        threads = [threading.Thread(target=client, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        stop(proc)
    return clients * per_client / wall, sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=200, help="round-trip queries per case")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        free = Path(d) / "free.yaml"
        free.write_text(json.dumps({"kind": "bench.remote_policies:FixedCostPolicy", "cameras": ["agentview", "wrist"]}))
        costly = Path(d) / "costly.yaml"
        costly.write_text(json.dumps({"kind": "bench.remote_policies:FixedCostPolicy", "latency_s": a.latency}))

        rows = round_trip(free, a.queries)
        base, base_p10 = rows[0][1]
        print(f"\nRound trip, 224x224 LIBERO agentview + wrist, state, prompt; {a.queries} queries; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'path':40s} {'median ms':>10s} {'overhead':>9s} {'p10 ms':>8s} {'overhead':>9s}")
        for label, (ms, p10) in rows:
            print(f"{label:40s} {ms:10.2f} {ms - base:9.2f} {p10:8.2f} {p10 - base_p10:9.2f}")
        openpi_overhead = rows[1][1][0] - base
        print(f"openpi overhead (median) {openpi_overhead:.2f} ms (target < 3 ms): "
              f"{'OK' if openpi_overhead < 3 else 'MISSED'}")

        results = {}
        for max_batch in (1, a.clients):
            results[max_batch] = serving(costly, a.clients, a.per_client, max_batch)
        print(f"\nServing: {a.clients} openpi clients x {a.per_client} queries, policy {a.latency:g} s per call")
        print(f"{'server':28s} {'queries/s':>10s} {'mean batch':>11s}")
        for max_batch, (qps, sizes) in results.items():
            print(f"{'--max-batch ' + str(max_batch):28s} {qps:10.2f} {statistics.mean(sizes):11.2f}")
        ratio = results[a.clients][0] / results[1][0]
        print(f"batched / unbatched: {ratio:.2f}x (target >= 3x): {'OK' if ratio >= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
