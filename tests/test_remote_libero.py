"""Remote policies on real LIBERO episodes, both ways, with the real published packages.

- `nora-bench run` with a remote preset against openpi's own server process and vla-eval's own
  model server process (tests/remote_helpers.py), and against an openpi server that hangs once;
- openpi's LIBERO client loop and vla-eval's own LIBEROBenchmark + SyncEpisodeRunner against
  `nora-bench serve`.
Episodes are short (10 env steps): what is tested is the wire, not the policy.
"""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.remote_helpers import echo_actions, free_port, start_server, stop
from tests.test_remote import serve, write_preset  # noqa: F401  (the `serve` fixture)

pytestmark = pytest.mark.slow

STEPS = 10


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]


def run_remote(tmp_path, port: int, protocol: str, *extra_args: str, **fields) -> tuple[object, list[dict]]:
    preset = write_preset(tmp_path, f"remote-{protocol}", kind="remote", protocol=protocol,
                          url=f"ws://127.0.0.1:{port}", gripper="libero", **fields)
    out = tmp_path / "run"
    r = run_cli("run", "libero_spatial", "--policy", preset, "--tasks", "0", "--trials", "1", "--max-steps", str(STEPS),
                "--no-video", "--workers", "1", "--out", str(out), *extra_args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r, records(out)


def test_run_against_openpi_server(tmp_path):
    port = free_port()
    proc = start_server("openpi-server", port, "ok")
    try:
        _, (rec,) = run_remote(tmp_path, port, "openpi", layout="openpi-libero", chunk_exec="first:5")
    finally:
        stop(proc)
    assert rec["termination"] == "step_limit" and rec["env_steps"] == STEPS and rec["queries"] == 2
    info = rec["policy_info"]
    assert info["remote"]["protocol"] == "openpi" and info["remote"]["url"] == f"ws://127.0.0.1:{port}"
    assert info["remote"]["server"] == {"policy": "echo", "mode": "ok", "action_horizon": 5}
    assert info["roundtrip_ms"]["n"] == 2 and info["server_infer_ms"]["n"] == 2
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "action_horizon: 5" in config and f"ws://127.0.0.1:{port}" in config  # the server, as it said at start


def test_run_against_vla_eval_server(tmp_path):
    port = free_port()
    proc = start_server("vla-eval-server", port, "ok")
    try:
        _, (rec,) = run_remote(tmp_path, port, "vla-eval", layout="vla-eval-libero", chunk_exec="all")
    finally:
        stop(proc)
    assert rec["termination"] == "step_limit" and rec["env_steps"] == STEPS and rec["queries"] == STEPS
    assert rec["policy_info"]["remote"]["server"]["model_server"] == "EchoServer"
    assert rec["policy_info"]["roundtrip_ms"]["n"] == STEPS


def test_a_hanging_server_reruns_the_episode_with_attempts_recorded(tmp_path, monkeypatch):
    """The scheduler's retry of a timed-out remote episode; run in this process (the CLI and Ray path
    of remote presets is the two tests above)."""
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    monkeypatch.setenv("REMOTE_TEST_FLAG", str(tmp_path / "hung"))
    port = free_port()
    proc = start_server("openpi-server", port, "hang-once")  # its 3rd query sleeps 4 s, once
    try:
        preset = write_preset(tmp_path, "remote-openpi", kind="remote", protocol="openpi", url=f"ws://127.0.0.1:{port}",
                              gripper="libero", layout="openpi-libero", chunk_exec="first:2", reply_timeout_s=1,
                              backoff_s=0.2)
        config = RunConfig.resolve(suite="libero_spatial", policy=preset, tasks="0", trials=1, max_steps=STEPS,
                                   video=False)
        out = tmp_path / "run"
        Scheduler(config, RunDir(out), ExecOptions(in_process=True, max_attempts=3, progress=False)).run()
        (rec,) = records(out)
    finally:
        stop(proc)
    assert (tmp_path / "hung").exists()
    assert rec["attempts"] == 2 and rec["termination"] == "step_limit", rec
    assert "did not answer within 1 s" in rec["attempt_errors"][0]


def test_server_down_at_start_is_one_line_and_nothing_recorded(tmp_path):
    port = free_port()
    preset = write_preset(tmp_path, "down", kind="remote", url=f"ws://127.0.0.1:{port}", connect_timeout_s=2)
    out = tmp_path / "run"
    r = run_cli("run", "libero_spatial", "--policy", preset, "--tasks", "0", "--trials", "1", "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the openpi policy server at ws://127.0.0.1:{port}" in lines[0], r.stderr
    assert not out.exists()


def _quat2axisangle(quat):
    """openpi examples/libero/main.py `_quat2axisangle` (robosuite's), as published (a58fb25)."""
    if quat[3] > 1.0:
        quat[3] = 1.0
    elif quat[3] < -1.0:
        quat[3] = -1.0
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def test_openpi_libero_client_completes_an_episode_against_serve(serve):  # noqa: F811
    """The loop of openpi's examples/libero/main.py (Physical-Intelligence/openpi a58fb25) with its
    own client and image tools, against `nora-bench serve`, for STEPS env steps."""
    import collections
    import pathlib

    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv
    from openpi_client import image_tools
    from openpi_client import websocket_client_policy as _websocket_client_policy

    port = serve("openpi")
    client = _websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port)
    task_suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    task = task_suite.get_task(0)
    env = OffScreenRenderEnv(bddl_file_name=pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file,
                             camera_heights=256, camera_widths=256)
    env.seed(7)
    try:
        env.reset()
        obs = env.set_init_state(task_suite.get_task_init_states(0)[0])
        action_plan, t, replies = collections.deque(), 0, []
        while t < STEPS + 10:
            if t < 10:
                obs, reward, done, info = env.step([0.0] * 6 + [-1.0])
                t += 1
                continue
            img = np.ascontiguousarray(obs["agentview_image"][::-1, ::-1])
            wrist_img = np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1])
            img = image_tools.convert_to_uint8(image_tools.resize_with_pad(img, 224, 224))
            wrist_img = image_tools.convert_to_uint8(image_tools.resize_with_pad(wrist_img, 224, 224))
            if not action_plan:
                element = {"observation/image": img, "observation/wrist_image": wrist_img,
                           "observation/state": np.concatenate((obs["robot0_eef_pos"], _quat2axisangle(obs["robot0_eef_quat"]),
                                                                obs["robot0_gripper_qpos"])),
                           "prompt": str(task.language)}
                action_chunk = client.infer(element)["actions"]
                assert len(action_chunk) >= 5
                np.testing.assert_array_equal(action_chunk, echo_actions(img, task.language))
                replies.append(action_chunk)
                action_plan.extend(action_chunk[:5])
            action = action_plan.popleft()
            obs, reward, done, info = env.step(action.tolist())
            t += 1
    finally:
        env.close()
    assert len(replies) == STEPS // 5


def test_vla_eval_libero_benchmark_completes_an_episode_against_serve(serve):  # noqa: F811
    """vla-eval's own LIBEROBenchmark, SyncEpisodeRunner and Connection against `nora-bench serve`."""
    from vla_eval.benchmarks.libero.benchmark import LIBEROBenchmark
    from vla_eval.connection import Connection
    from vla_eval.runners.sync_runner import SyncEpisodeRunner

    port = serve("vla-eval")
    bench = LIBEROBenchmark(suite="libero_spatial", seed=7, env_seed=0, max_steps=STEPS)

    async def main():
        conn = Connection(f"ws://127.0.0.1:{port}", timeout=60, max_retries=1)
        await conn.connect(benchmark="vla_eval.benchmarks.libero.benchmark:LIBEROBenchmark")
        task = {**bench.get_tasks()[0], "episode_idx": 0}
        try:
            return await SyncEpisodeRunner().run_episode(bench, task, conn, max_steps=STEPS)
        finally:
            await conn.close()
            bench.cleanup()

    result = asyncio.run(main())
    assert result["steps"] == STEPS and result["metrics"] == {"success": False}
