"""Policy servers and policies for the remote-policy tests, built from the real published packages.

- `openpi-server`: openpi's own `openpi_server.websocket_policy_server.WebsocketPolicyServer`
  (PyPI openpi-server 0.1.0) serving a small `openpi_client.base_policy.BasePolicy`, exactly as
  openpi's `scripts/serve_policy.py` wraps its policies (metadata dict, `serve_forever`).
- `vla-eval-server`: vla-eval's own `PredictModelServer` + `serve_async` (PyPI vla-eval 0.8.0),
  a subclass with `predict()` returning a 5-action chunk, as its model servers do.
- `EchoPolicy`: a nora-bench policy kind whose actions are a known function of what it saw, so a
  test can tell that images, prompt and state crossed the wire intact.

Run a server: `python -m tests.remote_helpers openpi-server PORT MODE` (MODE: ok, error, nan,
missing, shape, hang-once, die-once), `python -m tests.remote_helpers vla-eval-server PORT MODE`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nora_bench.types import ActionChunk, EpisodeInfo, Observation, Requirements

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 5


def echo_actions(image: np.ndarray, prompt: str, horizon: int = HORIZON, state=None) -> np.ndarray:
    """The chunk every test server answers: tiny motions that encode what it received."""
    a = np.zeros((horizon, 7))
    a[:, 0] = float(np.asarray(image, dtype=np.float64).mean()) / 255 * 0.01
    a[:, 1] = len(prompt) / 10000
    a[:, 2] = np.arange(horizon) * 1e-4
    if state is not None:
        a[:, 3] = float(np.sum(state)) * 1e-3
    a[:, 6] = -1.0  # LIBERO: open
    return a


class EchoPolicy:
    """A nora-bench policy (kind `tests.remote_helpers:EchoPolicy`): echo_actions of its agentview.

    `latency_s` adds a fixed cost per `act` call (per batch, as a GPU forward pass costs about the
    same for 1 or 8 observations); `key_by_prompt_length` adds `batch_key` like NORA's.
    """

    def __init__(self, action_spec=None, cameras=("agentview",), latency_s: float = 0.0, horizon: int = HORIZON,
                 key_by_prompt_length: bool = False):
        self.requirements = Requirements(cameras=tuple(cameras))
        self.latency_s, self.horizon = latency_s, horizon
        self.started: dict[str, EpisodeInfo] = {}
        self.ended: list[str] = []
        self.batches: list[list[str]] = []
        if key_by_prompt_length:
            self.batch_key = lambda obs: len(obs.instruction)

    def start_episode(self, info: EpisodeInfo) -> None:
        self.started[info.key] = info

    def act(self, observations: list[Observation]) -> list[ActionChunk]:
        if self.latency_s:
            time.sleep(self.latency_s)
        self.batches.append([o.instruction for o in observations])
        return [ActionChunk(echo_actions(o.images["agentview"], o.instruction, self.horizon)) for o in observations]

    def end_episode(self, key: str) -> None:
        self.started.pop(key, None)
        self.ended.append(key)


# -- helpers for tests ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def start_server(kind: str, port: int, mode: str = "ok") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tests.remote_helpers", kind, str(port), mode], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_port(port, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the servers (run in their own process) --------------------------------------------------------
def run_openpi_server(port: int, mode: str) -> None:
    from openpi_client import base_policy
    from openpi_server.websocket_policy_server import WebsocketPolicyServer

    flag = Path(os.environ.get("REMOTE_TEST_FLAG", f"/tmp/nora-bench-remote-{port}.flag"))

    class Policy(base_policy.BasePolicy):
        def __init__(self):
            self.calls = 0

        def infer(self, obs: dict) -> dict:
            self.calls += 1
            actions = echo_actions(obs["observation/image"], obs["prompt"], state=obs.get("observation/state"))
            if mode == "error":
                raise ValueError(f"this policy refuses the prompt {obs['prompt']!r}")
            if mode == "nan":
                actions[1, 2] = np.nan
            if mode == "shape":
                actions = actions[:, :6]
            if mode == "missing":
                return {"action": actions}
            if mode == "hang-once" and self.calls == 3 and not flag.exists():
                flag.write_text("hung")
                time.sleep(4.0)  # openpi's server blocks its event loop in infer: everyone waits
            if mode == "die-once" and self.calls == 3 and not flag.exists():
                flag.write_text("died")
                os._exit(17)
            return {"actions": actions}

    WebsocketPolicyServer(Policy(), host="127.0.0.1", port=port, metadata={"policy": "echo", "mode": mode,
                                                                          "action_horizon": HORIZON}).serve_forever()


def run_vla_eval_server(port: int, mode: str) -> None:
    import anyio
    from vla_eval.model_servers.predict import PredictModelServer
    from vla_eval.model_servers.serve import serve_async

    class EchoServer(PredictModelServer):
        def predict(self, obs, ctx):
            if mode == "error":
                raise ValueError("this model server refuses")
            image = obs["images"]["agentview"]
            return {"actions": echo_actions(image, obs["task_description"], state=obs.get("states"))}

        def get_observation_params(self):
            return {"send_wrist_image": True} if mode == "wants-wrist" else {}

    anyio.run(serve_async, EchoServer(chunk_size=HORIZON), "127.0.0.1", port)


if __name__ == "__main__":
    kind, port_arg, mode_arg = sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "ok"
    {"openpi-server": run_openpi_server, "vla-eval-server": run_vla_eval_server}[kind](port_arg, mode_arg)
