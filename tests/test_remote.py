"""Remote policies, both ways, against the real published packages on loopback.

Pinned (pyproject.toml `test` extra): openpi-client 0.1.2, openpi-server 0.1.0, vla-eval 0.8.0.
- nora-bench's client against openpi's own `WebsocketPolicyServer` and vla-eval's own
  `PredictModelServer` + `serve_async` (tests/remote_helpers.py);
- openpi's own `WebsocketClientPolicy` and vla-eval's own `Connection` against `nora-bench serve`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from nora_bench import UserError
from nora_bench.policies import check_preset, make_policy
from nora_bench.policies.remote import RemotePolicy, RemotePolicyError, public_url
from nora_bench.types import ActionSpec, EpisodeInfo, Observation
from nora_bench.wire import openpi as openpi_wire
from nora_bench.wire import vlaeval as vla_wire
from nora_bench.wire.layout import Layout, resize_with_pad
from tests.remote_helpers import ROOT, echo_actions, env, free_port, start_server, stop, wait_for_port

SPEC = ActionSpec()
RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)
WRIST = RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)
STATE = {"robot0_eef_pos": np.array([0.1, -0.2, 1.0]), "robot0_eef_quat": np.array([0.9, 0.1, -0.2, 0.37]),
         "robot0_gripper_qpos": np.array([0.039, -0.039])}
PROMPT = "put the black bowl on the plate"


def observation(key: str, prompt: str = PROMPT) -> Observation:
    return Observation(prompt, key, {"agentview": IMAGE, "wrist": WRIST}, dict(STATE))


def episode(key: str = "libero_spatial/task000/trial00", prompt: str = PROMPT) -> EpisodeInfo:
    return EpisodeInfo(key, "libero_spatial", 0, 0, 0, 123, prompt)


# -- wire formats and transforms, against the published code ----------------------------------------
def test_openpi_wire_is_openpi_clients_msgpack_numpy():
    from openpi_client import msgpack_numpy

    data = {"observation/image": IMAGE, "observation/state": np.arange(8.0), "prompt": PROMPT,
            "n": np.int64(3), "f": np.float32(0.5)}
    for decoded in (msgpack_numpy.unpackb(openpi_wire.pack(data)), openpi_wire.unpack(msgpack_numpy.packb(data))):
        assert np.array_equal(decoded["observation/image"], IMAGE) and decoded["observation/image"].dtype == np.uint8
        assert decoded["observation/state"].dtype == np.float64 and decoded["prompt"] == PROMPT
        assert decoded["n"] == np.int64(3) and type(decoded["f"]) is np.float32
    with pytest.raises(ValueError, match="dtype"):
        openpi_wire.pack({"x": np.array([object()])})


def test_vla_eval_wire_is_vla_evals_messages():
    from vla_eval.protocol import messages

    payload = {"images": {"agentview": IMAGE}, "task_description": PROMPT, "states": np.arange(8.0)}
    for fmt in ("png", "raw"):
        got = messages.unpack_message(vla_wire.pack(vla_wire.Message(vla_wire.OBSERVATION, payload, 4), fmt))
        assert got.type == messages.MessageType.OBSERVATION and got.seq == 4
        assert np.array_equal(got.payload["images"]["agentview"], IMAGE)
        assert np.array_equal(got.payload["states"], np.arange(8.0))
    theirs = messages.pack_message(messages.Message(messages.MessageType.ACTION, {"actions": np.ones(7, np.float32)}, 9))
    mine = vla_wire.unpack(theirs)
    assert mine.type == vla_wire.ACTION and mine.seq == 9 and mine.payload["actions"].dtype == np.float32
    with pytest.raises(ValueError, match="unknown vla-eval message type"):
        vla_wire.unpack(messages.msgpack.packb({"type": "pickle", "payload": {}, "seq": 0, "timestamp": 0.0}))


def test_layout_transforms_are_the_published_ones():
    """resize_with_pad = openpi_client.image_tools; axis-angle = openpi's LIBERO client (robosuite's
    formula, as vla-eval's `_quat_to_axisangle_robosuite`) and vla-eval's default `quat_to_axisangle`."""
    from openpi_client import image_tools
    from vla_eval.benchmarks.libero.benchmark import _quat_to_axisangle_robosuite
    from vla_eval.rotation import quat_to_axisangle

    for shape in ((256, 256, 3), (240, 320, 3), (480, 640, 3)):
        img = RNG.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(resize_with_pad(img, 224, 224), image_tools.resize_with_pad(img, 224, 224))
    openpi = Layout.resolve("openpi-libero", "openpi", "test")
    request = openpi.request(observation("k"))
    assert set(request) == {"observation/image", "observation/wrist_image", "observation/state", "prompt"}
    quat = STATE["robot0_eef_quat"]
    np.testing.assert_allclose(request["observation/state"][3:6], _quat_to_axisangle_robosuite(quat), rtol=1e-6)
    vla = Layout.resolve("vla-eval-libero", "vla-eval", "test").select({"send_state": True})
    request = vla.request(observation("k"))
    assert set(request) == {"images", "task_description", "states"} and request["images"]["agentview"] is not None
    flipped = -quat  # the same rotation: vla-eval takes the w >= 0 quaternion first
    np.testing.assert_allclose(vla.request(Observation("x", "k", {"agentview": IMAGE}, {**STATE, "robot0_eef_quat": flipped}))
                               ["states"][3:6], quat_to_axisangle(flipped), rtol=1e-6)
    assert request["images"]["agentview"].shape == (256, 256, 3)  # vla-eval sends the render size


def test_layout_errors_name_the_key():
    with pytest.raises(UserError, match="unknown layout 'droid'"):
        Layout.resolve("droid", "openpi", "preset x")
    with pytest.raises(UserError, match="images.cam needs `camera"):
        Layout.from_data({"prompt": "p", "images": {"cam": {}}}, "mine")
    custom = Layout.from_data({"prompt": "instruction", "images": {"obs.exterior": {"camera": "agentview"}},
                               "actions": "out.actions"}, "mine")
    assert custom.request(observation("k")) == {"obs": {"exterior": IMAGE}, "instruction": PROMPT}
    assert custom.parse_actions({"out": {"actions": np.zeros((2, 7))}}, 7).shape == (2, 7)


def test_public_url_drops_credentials():
    assert public_url("wss://user:secret@host.example:8443/policy?token=abc") == "wss://host.example:8443/policy"
    assert public_url("ws://127.0.0.1:8000") == "ws://127.0.0.1:8000"


# -- nora-bench's client against the real openpi server ------------------------------------------------
def remote(port: int, protocol: str = "openpi", **extra) -> RemotePolicy:
    return make_policy({"kind": "remote", "name": "t", "url": f"ws://127.0.0.1:{port}", "protocol": protocol, **extra},
                       SPEC)


def server_facts(params: dict) -> dict:
    """What the harness checks and records before a run (config.yaml `resolved`)."""
    return check_preset({"kind": "remote", "name": "t", **params})["resolved"]


@pytest.fixture
def openpi_server(request, tmp_path, monkeypatch):
    monkeypatch.setenv("REMOTE_TEST_FLAG", str(tmp_path / "flag"))
    port = free_port()
    proc = start_server("openpi-server", port, getattr(request, "param", "ok"))
    yield port
    stop(proc)


def test_client_against_openpi_server(openpi_server):
    facts = server_facts({"url": f"ws://127.0.0.1:{openpi_server}"})
    assert facts["server"] == {"policy": "echo", "mode": "ok", "action_horizon": 5} and facts["protocol"] == "openpi"
    policy = remote(openpi_server)
    assert policy.requirements.cameras == ("agentview", "wrist") and policy.requirements.state
    policy.start_episode(episode())
    first = policy.act([observation("libero_spatial/task000/trial00")])[0]
    second = policy.act([observation("libero_spatial/task000/trial00")])[0]
    # The server saw the 224 padded image, the prompt and the 8-D state openpi's LIBERO client sends.
    sent = Layout.resolve("openpi-libero", "openpi", "t").request(observation("k"))
    np.testing.assert_array_equal(first.actions, echo_actions(sent["observation/image"], PROMPT,
                                                              state=sent["observation/state"]))
    assert first.info["remote"]["server"]["policy"] == "echo" and "remote" not in second.info
    assert first.info["roundtrip_ms"] > 0 and first.info["server_infer_ms"] >= 0
    assert "server_prev_total_ms" in second.info
    policy.end_episode("libero_spatial/task000/trial00")
    policy.close()


@pytest.mark.parametrize("openpi_server,reason", [
    ("error", "openpi server error: ValueError: this policy refuses the prompt"),
    ("nan", "holds NaN"),
    ("shape", r"has shape \(5, 6\), expected \(H, 7\)"),
    ("missing", r"has no 'actions' \(it has: \['action', 'server_timing'\]\)"),
], indirect=["openpi_server"])
def test_unusable_replies_are_policy_errors_with_the_reason(openpi_server, reason):
    policy = remote(openpi_server)
    policy.start_episode(episode())
    with pytest.raises(RemotePolicyError, match=reason):
        policy.act([observation("libero_spatial/task000/trial00")])
    policy.end_episode("libero_spatial/task000/trial00")
    policy.close()


def test_server_down_is_one_line_at_check_and_infrastructure_error_later():
    from nora_bench.episode import InfrastructureError

    port = free_port()
    with pytest.raises(UserError, match=f"cannot reach the openpi policy server at ws://127.0.0.1:{port}"):
        server_facts({"url": f"ws://127.0.0.1:{port}", "connect_timeout_s": 2})
    policy = remote(port, reconnect_attempts=2, backoff_s=0.05, connect_timeout_s=2)
    with pytest.raises(InfrastructureError, match="after 2 attempts"):
        policy.start_episode(episode())


def test_a_server_that_dies_mid_episode_is_reconnected_with_backoff(tmp_path, monkeypatch):
    from nora_bench.episode import InfrastructureError

    monkeypatch.setenv("REMOTE_TEST_FLAG", str(tmp_path / "died"))
    port = free_port()
    proc = start_server("openpi-server", port, "die-once")  # exits on its 3rd query, once
    policy = remote(port, reconnect_attempts=8, backoff_s=0.2)
    try:
        policy.start_episode(episode())
        obs = observation("libero_spatial/task000/trial00")
        policy.act([obs])
        policy.act([obs])
        with pytest.raises(InfrastructureError, match="closed the connection"):
            policy.act([obs])
        policy.end_episode(obs.episode)
        proc.wait(timeout=30)
        assert proc.returncode == 17
        restarted = {}
        # The re-run episode reconnects with backoff while the server comes back.
        threading.Timer(0.3, lambda: restarted.setdefault("proc", start_server("openpi-server", port, "die-once"))).start()
        policy.start_episode(episode())
        chunk = policy.act([obs])[0]
        assert chunk.actions.shape == (5, 7) and chunk.info["remote"]["reconnects"] >= 1
        policy.close()
    finally:
        stop(proc)
        if "proc" in restarted:
            stop(restarted["proc"])


# -- nora-bench's client against the real vla-eval model server ------------------------------------------
@pytest.fixture
def vla_eval_server(request):
    port = free_port()
    proc = start_server("vla-eval-server", port, getattr(request, "param", "ok"))
    yield port
    stop(proc)


def test_client_against_vla_eval_server(vla_eval_server):
    facts = server_facts({"url": f"ws://127.0.0.1:{vla_eval_server}", "protocol": "vla-eval"})
    assert facts["server"]["model_server"] == "EchoServer" and facts["server"]["protocol_version"] == 1
    policy = remote(vla_eval_server, "vla-eval")
    assert policy.requirements.cameras == ("agentview",) and not policy.requirements.state
    policy.start_episode(episode())
    rows = [policy.act([observation("libero_spatial/task000/trial00")])[0].actions for _ in range(7)]
    expected = echo_actions(IMAGE, PROMPT)  # the server buffers its 5-action chunk: one row per observation
    assert all(r.shape == (1, 7) for r in rows)
    np.testing.assert_allclose(np.concatenate(rows[:5]), expected.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(rows[5][0], expected[0].astype(np.float32), rtol=1e-6)  # a fresh chunk
    policy.end_episode("libero_spatial/task000/trial00")
    policy.close()


@pytest.mark.parametrize("vla_eval_server", ["error"], indirect=True)
def test_vla_eval_error_message_is_a_policy_error(vla_eval_server):
    policy = remote(vla_eval_server, "vla-eval")
    policy.start_episode(episode())
    with pytest.raises(RemotePolicyError, match="observation_failed: ValueError: this model server refuses"):
        policy.act([observation("libero_spatial/task000/trial00")])
    policy.close()


@pytest.mark.parametrize("vla_eval_server", ["wants-wrist"], indirect=True)
def test_vla_eval_observation_params_must_be_answered_in_the_preset(vla_eval_server):
    params = {"url": f"ws://127.0.0.1:{vla_eval_server}", "protocol": "vla-eval"}
    with pytest.raises(UserError, match="asks for send_wrist_image: true"):
        server_facts(params)
    server_facts({**params, "send_wrist_image": True})
    assert remote(vla_eval_server, "vla-eval", send_wrist_image=True).requirements.cameras == ("agentview", "wrist")


# -- the real published clients against `nora-bench serve` ----------------------------------------------
def write_preset(tmp_path, name: str, **fields) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(fields))  # JSON is YAML
    return str(path)


@pytest.fixture
def serve(tmp_path):
    procs = []

    def start(protocol: str, *args: str, **policy_fields) -> int:
        preset = write_preset(tmp_path, "echo", kind="tests.remote_helpers:EchoPolicy", **policy_fields)
        proc = subprocess.Popen([sys.executable, "-m", "nora_bench.cli", "serve", "--policy", preset, "--protocol",
                                 protocol, "--port", "0", *args], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        assert line.startswith("serving echo over"), line + proc.stderr.read()
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        wait_for_port(port, proc)
        return port

    yield start
    for p in procs:
        stop(p)


def test_openpi_client_against_serve(serve):
    from openpi_client import image_tools
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    port = serve("openpi")
    image = image_tools.resize_with_pad(IMAGE, 224, 224)
    results = {}

    def client(i: int) -> None:
        c = WebsocketClientPolicy("127.0.0.1", port)
        assert c.get_server_metadata()["policy"] == "echo"
        prompt = f"task number {i}" + "!" * i
        results[i] = [c.infer({"observation/image": image, "observation/wrist_image": image,
                               "observation/state": np.zeros(8), "prompt": prompt}) for _ in range(3)]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    for i, replies in results.items():
        for reply in replies:
            np.testing.assert_array_equal(reply["actions"], echo_actions(image, f"task number {i}" + "!" * i))
            assert {"infer_ms", "queue_ms", "batch_size"} <= set(reply["server_timing"])
    # A request without the prompt: openpi's error convention, a text frame then a close.
    c = WebsocketClientPolicy("127.0.0.1", port)
    with pytest.raises(RuntimeError, match="Error in inference server:(.|\n)*has no 'prompt'"):
        c.infer({"observation/image": image})


def test_vla_eval_connection_against_serve(serve):
    from vla_eval.connection import Connection
    from vla_eval.protocol.messages import MessageType

    port = serve("vla-eval", "--max-wait-ms", "1", chunk_exec="first:3")

    async def main():
        conn = Connection(f"ws://127.0.0.1:{port}", timeout=30, max_retries=1)
        await conn.connect(benchmark="vla_eval.benchmarks.libero.benchmark:LIBEROBenchmark")
        info = conn.server_info
        await conn.start_episode({"task": {"name": PROMPT, "suite": "libero_spatial", "task_id": 0, "episode_idx": 0}})
        actions = [await conn.act({"images": {"agentview": IMAGE}, "task_description": PROMPT}) for _ in range(4)]
        await conn.end_episode({"metrics": {"success": False}, "steps": 4, "elapsed_sec": 0.1})
        # An observation without the image the policy needs: an error message, the connection stays.
        await conn.send(MessageType.OBSERVATION, {"task_description": PROMPT})
        error = await conn.recv(timeout=30)
        await conn.close()
        return info, actions, error

    info, actions, error = asyncio.run(main())
    assert info["model_server"] == "nora-bench:echo" and info["protocol_version"] == 1
    assert info["action_spec"]["gripper"]["format"] == "binary_close_positive"
    expected = echo_actions(IMAGE, PROMPT).astype(np.float32)
    # chunk rule first:3: rows 0, 1, 2 of the chunk, then a new chunk's row 0
    for a, row in zip(actions, (0, 1, 2, 0)):
        assert a["actions"].shape == (7,)
        np.testing.assert_array_equal(a["actions"], expected[row])
    assert actions[0]["server_timing"]["batch_size"] == 1 and actions[1]["server_timing"] == {"buffered": 1}
    assert error.type == MessageType.ERROR and "needs its 'agentview' image" in error.payload["error"]


def test_serve_refuses_a_busy_port_in_one_line(tmp_path):
    preset = write_preset(tmp_path, "echo", kind="tests.remote_helpers:EchoPolicy")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "nora_bench.cli", "serve", "--policy", preset, "--port", str(port)],
                           cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
                                             "pick another --port"]
