"""The real-WidowX adapter against the stand-in robot server, a separate process speaking the
bridge_data_robot wire protocol on loopback; operator answers go through the CLI's real stdin.

Upstream facts these tests hold the stand-in and the client to (read, not copied):
- rail-berkeley/bridge_data_robot a902e5b96c518deddc4d756c26f32d033cef5718,
  `widowx_envs/widowx_envs/widowx_env_service.py`: WidowXActionServer.__observe sends
  `{"image", "state", "full_image": mat_to_jpeg(obs["full_image"][0])}` whatever keys are asked
  (JPEG since commit 6325002451c9103f80b4fd5156e2aa2853f0152c, 2023-10-04; a raw array before, and
  before `init` a random 480x640 array and `state` {}); __action answers `{"status": ...}`,
  EXECUTION_FAILURE for an unknown key, NOT_INITIALIZED before init; WidowXClient.get_observation
  decodes `full_image` with `jpeg_to_mat`. `base/robot_base_env.py` `render()` flips the camera's
  BGR to RGB (`img[:, :, ::-1]`) before the server encodes it; `widowx_env.py`
  `_get_processed_image` makes `image` (resize, CHW, flatten, float32 / 255, one row per camera).
- youliangtan/agentlace 76984f9b854b9ad88c78b3e5f0319e6e3c573e34 (`internal/utils.py` unchanged
  since edgeml, which bridge_data_robot imports): `mat_to_jpeg` = `cv2.imencode(".jpg", img)`,
  `jpeg_to_mat` = `cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)`, `compute_hash` =
  md5 of `pickle.dumps(obj)`, lz4 compression = `lz4.frame.compress(pickle.dumps(data))`;
  `action.py`: the hash reply is `{"success": True, "payload": json.dumps(asdict(config),
  separators=(",", ":"))}`, an unknown request type gets `{"success": False, "message": "Invalid
  payload"}`, and the client sends `{"type": "obs", "keys": <set>}`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lz4.frame
import numpy as np
import pytest
import yaml

from nora_bench import UserError
from nora_bench.config import load_suite
from nora_bench.envs.widowx import UnattendedOperator, WidowXEnv, pacing_stats
from nora_bench.envs.widowx_protocol import (
    ConfigMismatch,
    ForbiddenPickle,
    ObservationError,
    ProtocolError,
    WidowXClient,
    WidowXStatus,
    agentlace_config_hash,
    decode,
    decode_full_image,
    encode,
    jpeg_to_mat,
    mat_to_jpeg,
    widowx_config,
)
from nora_bench.envs.widowx_sim_server import FAULTS
from nora_bench.episode import EpisodeResult, EpisodeSpec

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200",
           MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"))
CLI = [sys.executable, "-m", "nora_bench.cli"]


# -- helpers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose output lines are read by a thread, so a test can wait for a prompt."""

    def __init__(self, args: list[str], stdin: bool = False):
        self.proc = subprocess.Popen(args, env=ENV, cwd=REPO, text=True, bufsize=1, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout} s; output so far:\n" + "\n".join(self.lines))
            if line is None:
                raise AssertionError(f"process ended before {text!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        while True:
            line = self._q.get(timeout=10)
            if line is None:
                break
            self.lines.append(line)
        return rc, "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(*options: str) -> tuple[Process, int]:
    port = free_port()
    server = Process([*CLI, "widowx-sim-server", "--port", str(port), *options])
    server.expect("listening on tcp://127.0.0.1", timeout=60)
    return server, port


@pytest.fixture
def sim_server():
    servers = []

    def start(*options: str) -> int:
        server, port = start_server(*options)
        servers.append(server)
        return port

    yield start
    for s in servers:
        s.stop()


def quick_suite(tmp_path: Path, **env_options) -> str:
    """widowx_real with short request timeouts (a lost connection shows in 1 s, not 5)."""
    data = yaml.safe_load((REPO / "suites" / "widowx_real.yaml").read_text())
    data["env_options"].update(env_options)
    path = tmp_path / "widowx_quick.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_args(suite: str, port: int, out: Path, *extra: str) -> list[str]:
    return [*CLI, "run", suite, "--policy", "random", "--robot-host", "127.0.0.1", "--robot-port", str(port),
            "--out", str(out), *extra]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


# -- the wire protocol ---------------------------------------------------------------------------
def observation_like_the_robot() -> dict:
    rng = np.random.default_rng(0)
    return {"full_image": rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
            "image": rng.random(3 * 16 * 16, dtype=np.float32), "state": np.arange(7, dtype=np.float64),
            "env_done": False, "t": np.float32(0.5), "keys": {"image", "state"}, "nested": [1, 2.5, "x", (3, b"y")]}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_admits_what_the_protocol_carries(protocol):
    msg = observation_like_the_robot()
    got = decode(lz4.frame.compress(pickle.dumps(msg, protocol=protocol)))
    assert set(got) == set(msg)
    for k in ("full_image", "image", "state"):
        assert got[k].dtype == msg[k].dtype and np.array_equal(got[k], msg[k])
    assert got["t"] == np.float32(0.5) and got["keys"] == {"image", "state"} and got["nested"] == msg["nested"]
    assert decode(encode(msg))["env_done"] is False


class _Opens:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _Runs:
    def __reduce__(self):
        return (os.system, ("true",))


def test_restricted_unpickler_refuses_code(tmp_path):
    target = tmp_path / "created-by-unpickling"
    with pytest.raises(ForbiddenPickle, match=r"(io|builtins)\.open.*never carries"):
        decode(lz4.frame.compress(pickle.dumps({"payload": _Opens(str(target))})))
    assert not target.exists()
    with pytest.raises(ForbiddenPickle, match=r"(posix|os)\.system"):
        decode(lz4.frame.compress(pickle.dumps([_Runs()])))
    with pytest.raises(ForbiddenPickle, match="array of Python objects"):
        decode(encode({"a": np.array([1, "two"], dtype=object)}))
    with pytest.raises(ProtocolError, match="not lz4-frame data"):
        decode(pickle.dumps({"type": "hash"}))


def test_config_json_is_bridge_data_robots():
    # The handshake compares this JSON byte for byte with the server's: field order and separators matter.
    assert widowx_config(5556).to_json() == (
        '{"port_number":5556,"action_keys":["init","move","gripper","reset","step_action","reboot_motor"],'
        '"observation_keys":["image","state","full_image"],"broadcast_port":5557,"version":"0.0.1"}')
    assert widowx_config(5556).digest() != widowx_config(5556, version="0.0.2").digest()


def test_agentlace_config_hash_is_md5_of_the_pickled_json():
    """agentlace `internal/utils.py` compute_hash(obj) = md5(pickle.dumps(obj)), applied by
    ActionClient to the JSON strings (`action.py`): not the md5 of the JSON's bytes."""
    import hashlib

    text = widowx_config(5556).to_json()
    upstream = hashlib.md5(pickle.dumps(text)).hexdigest()  # compute_hash, as agentlace writes it
    assert agentlace_config_hash(text) == widowx_config(5556).agentlace_hash() == upstream
    assert upstream != hashlib.md5(text.encode()).hexdigest() == widowx_config(5556).digest()


# -- the camera image: JPEG as agentlace encodes and decodes it --------------------------------------
def rgb_scene(h: int = 96, w: int = 128) -> np.ndarray:
    """An RGB image whose channels differ everywhere (an orange field, a blue block, a gradient)."""
    img = np.empty((h, w, 3), np.uint8)
    img[...] = (210, 120, 40)
    img[h // 5: h // 2, w // 4: 3 * w // 4] = (30, 60, 200)
    img[3 * h // 4:, :, 1] = np.linspace(0, 255, w, dtype=np.uint8)
    return img


def test_jpeg_round_trip_keeps_the_servers_channel_order():
    """The server encodes its RGB frame with cv2 (which takes it for BGR); the client decodes with
    cv2 and gets RGB back. A standard decoder (PIL) reads the same bytes with R and B swapped."""
    import cv2
    from PIL import Image

    img = rgb_scene()
    buf = mat_to_jpeg(img)
    assert buf == cv2.imencode(".jpg", img)[1].tobytes()  # agentlace mat_to_jpeg
    decoded = decode_full_image(buf)
    assert decoded.encoding == "jpeg" and decoded.wire_bytes == len(buf) and decoded.decode_s > 0
    assert decoded.array.shape == img.shape and decoded.array.dtype == np.uint8
    assert np.abs(decoded.array.astype(int) - img).mean() < 3  # JPEG quality 95
    assert np.array_equal(decoded.array, jpeg_to_mat(buf))
    pil = np.asarray(Image.open(io.BytesIO(buf)).convert("RGB"))
    assert np.abs(pil[..., ::-1].astype(int) - img).mean() < 3
    assert np.abs(pil.astype(int) - img).mean() > 40
    raw = decode_full_image(img)  # an older server's raw array is accepted as it is
    assert raw.encoding == "raw" and raw.array is img


def unusable_full_images(tmp_path) -> dict:
    """What the stand-in's faults put in `full_image`, and a few more."""
    obs = {"full_image": mat_to_jpeg(rgb_scene()), "image": np.zeros((1, 12), np.float32), "state": np.zeros(7)}
    header = bytearray(mat_to_jpeg(rgb_scene(16, 16)))
    sof = header.index(b"\xff\xc0")  # baseline frame header: ... height (2 bytes), width (2 bytes)
    header[sof + 5: sof + 9] = (5000).to_bytes(2, "big") * 2
    bomb = bytearray(header)
    bomb[sof + 5: sof + 9] = (60000).to_bytes(2, "big") * 2
    return {
        "malformed-jpeg": (FAULTS["malformed-jpeg"](obs, "")["full_image"], "do not decode as a JPEG image"),
        "truncated-jpeg": (FAULTS["truncated-jpeg"](obs, "")["full_image"], "JPEG is truncated"),
        "wrong-shape": (FAULTS["wrong-shape"](obs, "")["full_image"], r"uint8 array of shape \(3, 96, 128\)"),
        "png": (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a JPEG image"),
        "float": (rgb_scene().astype(np.float32), "float32 array"),
        "huge": (bytes(header), "claims 5000x5000 pixels"),
        "bomb": (bytes(bomb), "claims more pixels than a camera sends"),
        "text": ("a string", "is str"),
    }


def test_unusable_full_images_are_refused_with_one_line(tmp_path):
    for name, (value, message) in unusable_full_images(tmp_path).items():
        with pytest.raises(ObservationError, match=message) as e:
            decode_full_image(value)
        assert "\n" not in str(e.value) and "full_image" in str(e.value), name


def test_pacing_stats():
    ticks = [0.0, 0.2, 0.4, 0.65, 0.8]  # one step 50 ms late, the next back on the grid
    s = pacing_stats(ticks, 5.0)
    assert s["achieved_hz"] == pytest.approx(4 / 0.8)
    assert s["jitter_ms_max"] == pytest.approx(50.0)
    assert s["late_steps"] == 1
    assert pacing_stats([0.0], 5.0)["achieved_hz"] is None


def test_widowx_real_suite_has_the_papers_categories(tmp_path):
    s = load_suite("widowx_real")
    assert s.env == "widowx" and s.trials == 10 and s.max_steps == 200 and s.num_steps_wait == 0
    assert s.env_options["control_hz"] == 5.0
    assert len(s.task_list) == s.num_tasks
    assert {t["category"] for t in s.task_list} == {"ood_object_grasping", "spatial_reasoning",
                                                    "multi_object_pick_place", "distractors"}
    assert all(t["instruction"] for t in s.task_list)
    assert {t["objects"] for t in s.task_list if t["category"] == "multi_object_pick_place"} == {2}
    data = yaml.safe_load((REPO / "suites" / "widowx_real.yaml").read_text())
    data["num_tasks"] = 9
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="num_tasks is 9 but task_list has 8"):
        load_suite(str(bad))


# -- against the stand-in server -----------------------------------------------------------------
class UpstreamClient:
    """A client written the way agentlace's ReqRepClient + ActionClient and bridge_data_robot's
    WidowXClient speak (see the module docstring): zmq REQ, `lz4.frame.compress(pickle.dumps(...))`,
    `pickle.loads` (the stand-in is ours), `jpeg_to_mat` on `full_image` written out with cv2."""

    def __init__(self, port: int):
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.RCVTIMEO, 20000)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def send(self, message: dict):
        self.sock.send(lz4.frame.compress(pickle.dumps(message)))
        return pickle.loads(lz4.frame.decompress(self.sock.recv()))

    def act(self, key: str, payload: dict) -> dict:
        return self.send({"type": "act", "key": key, "payload": payload})

    def obs(self, keys=("image", "state", "full_image")) -> dict:
        return self.send({"type": "obs", "keys": set(keys)})

    @staticmethod
    def jpeg_to_mat(buf: bytes) -> np.ndarray:
        import cv2

        return cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)

    def close(self):
        self.sock.close()
        self.ctx.term()


def test_stand_in_answers_as_bridge_data_robots_server(sim_server, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    port = sim_server("--record-frames", str(frames))
    c = UpstreamClient(port)
    try:
        hello = c.send({"type": "hash"})
        assert hello == {"success": True, "payload": widowx_config(port).to_json()}
        assert c.send({"type": "nonsense"}) == {"success": False, "message": "Invalid payload"}
        # Before init: a random raw 480x640 image and an empty state; actions NOT_INITIALIZED.
        before = c.obs()
        assert set(before) == {"image", "state", "full_image"} and before["state"] == {}
        assert before["full_image"].shape == (480, 640, 3) and before["full_image"].dtype == np.uint8
        assert c.act("step_action", {"action": np.zeros(7), "blocking": False}) == {"status": WidowXStatus.NOT_INITIALIZED}
        assert c.act("fly", {}) == {"status": WidowXStatus.EXECUTION_FAILURE}
        assert c.act("init", {"env_params": {}, "image_size": 64}) == {"status": WidowXStatus.SUCCESS}
        assert c.act("reset", {}) == {"status": WidowXStatus.SUCCESS}
        obs = c.obs(keys=("state",))  # the real server sends every key whatever is asked
        assert set(obs) == {"image", "state", "full_image"}
        assert isinstance(obs["full_image"], bytes) and obs["full_image"][:2] == b"\xff\xd8"
        assert obs["image"].shape == (1, 3 * 64 * 64) and obs["image"].dtype == np.float32
        assert 0 <= obs["image"].min() and obs["image"].max() <= 1
        assert obs["state"].shape == (7,) and obs["state"].dtype == np.float64
        np.testing.assert_allclose(obs["state"], [0.3, 0.0, 0.15, 0, 0, 0, 1])
        # The decoded frame is what the stand-in encoded, within JPEG loss, in the same (RGB) order.
        sent = np.load(frames / "frame_0001.npy")
        decoded = c.jpeg_to_mat(obs["full_image"])
        assert decoded.shape == sent.shape == (480, 640, 3)
        assert np.abs(decoded.astype(int) - sent).mean() < 2.0
        assert np.abs(decoded[..., ::-1].astype(int) - sent).mean() > 10 * np.abs(decoded.astype(int) - sent).mean()
        # `image` is the same frame, resized, CHW, flattened: it matches the decoded full image.
        import cv2

        small = cv2.resize(decoded, (64, 64), interpolation=cv2.INTER_AREA).transpose(2, 0, 1).reshape(-1) / 255.0
        assert np.abs(small - obs["image"][0]).mean() < 0.01
        assert np.abs(small.reshape(3, -1)[::-1].reshape(-1) - obs["image"][0]).mean() > 0.05
        assert c.act("step_action", {"action": np.array([0.01, 0, 0, 0, 0, 0, 0.0]), "blocking": False}) == {
            "status": WidowXStatus.SUCCESS}
        np.testing.assert_allclose(c.obs()["state"], [0.31, 0.0, 0.15, 0, 0, 0, 0.0])
    finally:
        c.close()


def test_client_drives_the_stand_in_arm(sim_server):
    port = sim_server()
    client = WidowXClient("127.0.0.1", port, timeout_s=10)
    try:
        assert client.init({}, image_size=64) == WidowXStatus.SUCCESS
        assert client.reset() == WidowXStatus.SUCCESS
        start = client.get_observation().state
        for _ in range(3):
            assert client.step_action(np.array([0.01, -0.02, 0.005, 0, 0, 0.1, 0.0])) == WidowXStatus.SUCCESS
        obs = client.get_observation()
        # The end effector integrated the deltas; the gripper closed.
        np.testing.assert_allclose(obs.state[:3], start[:3] + 3 * np.array([0.01, -0.02, 0.005]), atol=1e-9)
        assert obs.state[5] == pytest.approx(0.3) and obs.state[6] == 0.0
        assert obs.full_image.encoding == "jpeg" and obs.full_image.array.shape == (480, 640, 3)
        assert obs.full_image.array.dtype == np.uint8 and obs.image.shape == (1, 3 * 64 * 64)
        # A move far outside the workspace is clipped to it.
        client.move(np.array([2.0, 0, 0.1, 0, 0, 0]), blocking=True)
        assert client.get_observation().state[0] == pytest.approx(0.45)
    finally:
        client.close()


def widowx_spec(port: int, **kw) -> EpisodeSpec:
    return EpisodeSpec(suite="widowx_real", task_id=0, trial=0, init_state=0, seed=0, max_steps=3, env="widowx",
                       num_steps_wait=0, cameras=("agentview",), video_cameras=("agentview",),
                       env_options=(("robot_host", "127.0.0.1"), ("robot_port", port),
                                    ("task", {"name": "t", "instruction": "put the carrot in pot"})), **kw)


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_env_serves_the_policy_the_robot_camera_under_its_name(sim_server, tmp_path, encoding):
    frames = tmp_path / "frames"
    frames.mkdir()
    port = sim_server("--full-image-encoding", encoding, "--record-frames", str(frames))
    env = WidowXEnv(UnattendedOperator())
    spec = widowx_spec(port)
    try:
        obs = env.reset(spec)
        assert obs.instruction == "put the carrot in pot" and obs.episode == spec.key
        assert set(obs.images) == {"agentview"} and obs.images["agentview"].shape == (480, 640, 3)
        assert obs.state is None  # proprioception only for policies that ask for it
        sent = np.load(sorted(frames.glob("*.npy"))[-1])
        err = np.abs(obs.images["agentview"].astype(int) - sent).mean()
        assert err < 2.0 and (err == 0) == (encoding == "raw")  # lossy JPEG, or the array itself
        r = env.step(np.array([0.02, 0, 0, 0, 0, 0, 1.0]))
        assert r.failure is None and r.stop is None and not r.success
        assert env.frame(r.observation) is r.observation.images["agentview"]
        assert not np.array_equal(r.observation.images["agentview"], obs.images["agentview"])  # the arm moved
        env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))  # LIBERO's "open": outside the Bridge range, counted
        info = env.episode_info()
        assert info["gripper_convention"] == "bridge" and info["gripper_outside_convention"] == 1
        assert info["image_encoding"] == encoding and info["image_shape"] == [480, 640, 3]
        assert info["config_hash"] == widowx_config(port).digest()
        assert info["agentlace_config_hash"] == widowx_config(port).agentlace_hash()
        assert ("jpeg_decode_ms_mean" in info) == (encoding == "jpeg")
        with pytest.raises(UserError, match="one third-person camera"):
            env.reset(dataclasses.replace(spec, cameras=("wrist",)))
    finally:
        env.close()


def test_server_with_another_config_hash_is_refused(sim_server, tmp_path):
    port = sim_server("--config-version", "9.9.9")
    with pytest.raises(ConfigMismatch, match="another protocol config"):
        WidowXClient("127.0.0.1", port, timeout_s=10)
    out = tmp_path / "run"
    p = Process(run_args("widowx_real", port, out, "--tasks", "0", "--trials", "1"))
    rc, text = p.finish()
    assert rc == 2, text
    assert "speaks another protocol config" in text and '"version":"9.9.9"' in text
    assert not (out / "episodes.jsonl").exists()


def test_server_sending_a_forbidden_pickle_is_refused(sim_server, tmp_path):
    target = tmp_path / "the-server-made-me-do-it"
    port = sim_server("--forbidden-pickle", str(target))
    p = Process(run_args("widowx_real", port, tmp_path / "run", "--tasks", "0", "--trials", "1"))
    rc, text = p.finish()
    assert rc == 2, text
    assert re.search(r"refused a message from the robot server: it pickles (io|builtins)\.open", text), text
    assert not target.exists()


# What each stand-in fault makes the run say (the one line), and whether the operator is asked to retry.
FAULT_LINES = {
    "malformed-jpeg": (r"the robot's 'full_image' is \d+ bytes that do not decode as a JPEG image", True),
    "truncated-jpeg": (r"the robot's 'full_image' JPEG is truncated \(\d+ bytes, no end-of-image marker\)", True),
    "wrong-shape": (r"the robot's 'full_image' is a uint8 array of shape \(3, 480, 640\)", True),
    "hostile-pickle": (r"refused a message from the robot server: it pickles (io|builtins)\.open", False),
}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("fault", list(FAULT_LINES))
def test_unusable_first_observation_ends_the_run_with_one_line(sim_server, tmp_path, fault):
    """After a clean handshake, init, reset and move, the robot's first observation is unusable:
    the operator is asked once whether to ask again (never for a hostile pickle); then the run
    ends with one line naming the problem, exit code 2, and nothing recorded."""
    target = tmp_path / "the-server-made-me-do-it"
    port = sim_server("--fault", fault, "--fault-path", str(target))
    out = tmp_path / "run"
    p = Process(run_args("widowx_real", port, out, "--tasks", "0", "--trials", "2"), stdin=True)
    pattern, asks = FAULT_LINES[fault]
    try:
        p.expect("press Enter to start")
        p.send("")
        if asks:
            line = p.expect("robot-side error:")
            assert re.search(pattern, line), line
            p.expect("Press Enter to ask the robot again (once)")
            p.send("")
        rc, text = p.finish()
    finally:
        p.stop()
    assert rc == 2, text
    [line] = error_lines(text)
    assert re.search(pattern, line), text
    assert ("again after a retry" in line) == asks
    assert "Traceback" not in text and "errored after" not in text
    assert text.count("press Enter to start") == 1  # no scene set-up asked again
    assert not target.exists()
    assert not (out / "episodes.jsonl").exists() or not records(out)


@pytest.mark.parametrize("fault", ["truncated-jpeg", "hostile-pickle"])
def test_unusable_observation_mid_episode(sim_server, tmp_path, fault):
    """Two good observations, then only bad ones: an unusable image ends the episode as
    env_failure after the operator's one retry (recorded, not a success); a hostile pickle ends
    the run at once."""
    target = tmp_path / "the-server-made-me-do-it"
    port = sim_server("--fault", fault, "--fault-after", "2", "--fault-path", str(target))
    out = tmp_path / "run"
    p = Process(run_args("widowx_real", port, out, "--tasks", "0", "--trials", "1", "--max-steps", "20"), stdin=True)
    pattern, asks = FAULT_LINES[fault]
    try:
        p.expect("press Enter to start")
        p.send("")
        if asks:
            p.expect("Press Enter to ask the robot again (once)")
            p.send("")
            line = p.expect("episode over after")
            assert "the robot sent an unusable observation" in line
            p.expect("recorded: failure (robot-side error)")
        rc, text = p.finish()
    finally:
        p.stop()
    assert "Traceback" not in text and not target.exists()
    if not asks:
        assert rc == 2, text
        [line] = error_lines(text)
        assert re.search(pattern, line), text
        assert not (out / "episodes.jsonl").exists() or not records(out)
        return
    assert rc == 0, text
    [r] = records(out)
    assert r["success"] is False and r["termination"] == "env_failure" and r["attempts"] == 1
    assert re.search("robot-side error: " + pattern, r["error"]), r["error"]
    assert r["env_steps"] == 2 and r["env_info"]["ended_by"] == "robot_error"
    assert r["env_info"]["image_encoding"] == "jpeg" and r["video"]


def test_run_needs_a_robot_host_and_libero_refuses_one(tmp_path):
    p = Process([*CLI, "run", "widowx_real", "--tasks", "0", "--trials", "1", "--out", str(tmp_path / "a")])
    rc, text = p.finish()
    assert rc == 2 and "pass --robot-host HOST" in text, text
    p = Process([*CLI, "run", "libero_spatial", "--robot-host", "127.0.0.1", "--out", str(tmp_path / "b")])
    rc, text = p.finish()
    assert rc == 2 and "apply to real-robot suites" in text, text


def test_widowx_real_task_end_to_end(sim_server, tmp_path):
    """A whole multi-object task (2 trials, 10 steps at 5 Hz) with the operator on stdin: one trial
    runs to the step limit and gets partial credit, the other is stopped early by Enter and judged
    a success. The run folder holds the same records, table and videos as a LIBERO run."""
    port = sim_server()
    out = tmp_path / "run"
    p = Process(run_args("widowx_real", port, out, "--tasks", "4", "--trials", "2", "--max-steps", "10",
                         "--chunk-exec", "first"), stdin=True)
    try:
        p.expect("instruction: put the red bottle and the hamburger in the pot")
        p.expect("press Enter to start")
        p.send("")
        p.expect("How many of the 2 objects were placed as instructed? [0-2]")
        p.send("maybe")
        p.expect("not understood: 'maybe'; answer a number from 0 to 2")
        p.send("1")
        p.expect("recorded: failure")
        p.expect("trial 2 ===")
        p.expect("press Enter to start")
        p.send("")
        p.expect("press Enter to stop the episode early")
        time.sleep(0.7)  # a few control steps
        p.send("")
        line = p.expect("episode over after")
        assert "you stopped it" in line
        p.send("2")
        p.expect("recorded: success")
        rc, text = p.finish()
    finally:
        p.stop()
    assert rc == 0, text
    assert "Success per task" in text and "red_bottle_and_hamburger_in_pot" in text

    recs = records(out)
    assert [r["trial"] for r in recs] == [0, 1]
    assert set(EpisodeResult.__dataclass_fields__) <= set(recs[0])  # the LIBERO record schema (+ the run's stamp)
    first, second = recs
    assert first["success"] is False and first["termination"] == "step_limit" and first["env_steps"] == 10
    assert first["env_info"]["objects_placed"] == 1 and first["env_info"]["partial_success"] == 0.5
    assert second["success"] is True and second["termination"] == "success"
    assert second["env_info"]["ended_by"] == "operator_stop" and 0 < second["env_steps"] < 10
    for r in recs:
        info = r["env_info"]
        assert r["instruction"] == "put the red bottle and the hamburger in the pot"
        assert info["category"] == "multi_object_pick_place" and info["robot"] == f"127.0.0.1:{port}"
        assert info["config_hash"] == widowx_config(port).digest()
        assert info["control_hz"] == 5.0
        # Paced at 5 Hz by the harness: never faster, and on target unless a step ran late (a slow
        # render on a loaded machine), which is then counted.
        # The step an operator stop ends is counted but never paced: a stop on a loaded machine can
        # come after a single paced step, which gives no rate yet.
        paced = r["env_steps"] - (info["ended_by"] == "operator_stop")
        if paced < 2:
            assert info["achieved_hz"] is None and info["jitter_ms_max"] is None
            continue
        assert 0 < info["achieved_hz"] <= 5.05, info
        if info["late_steps"] == 0:
            assert info["achieved_hz"] == pytest.approx(5.0, rel=0.03), info
        assert info["jitter_ms_max"] is not None

    from nora_bench.results import load, task_table
    from nora_bench.video import read_frames

    table = task_table(load(out))
    row = table.iloc[0]
    assert (row["episodes"], row["successes"], row["errored"], row["success_rate"]) == (2, 1, 0, 0.5)
    import imageio.v2 as imageio

    for r in recs:
        frames = read_frames(str(out / r["video"]))
        assert frames.shape[1:] == (480, 640, 3) and len(frames) == r["env_steps"] + 1
        with imageio.get_reader(str(out / r["video"])) as reader:
            assert reader.get_meta_data()["fps"] == 5.0  # plays in real time at the control rate
    # The arm moved: the last frame of the full episode differs from its first.
    frames = read_frames(str(out / first["video"]))
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 0.5

    p = Process([*CLI, "table", str(out)])
    rc, text = p.finish()
    assert rc == 0 and "50.0%" in text, text


# Bridge un-normalization stats in the OpenVLA norm_stats.json layout (values of the order of bridge_orig's).
BRIDGE_STATS = {"bridge_orig": {"action": {
    "q01": [-0.03, -0.04, -0.03, -0.1, -0.1, -0.2, 0.0], "q99": [0.03, 0.04, 0.035, 0.1, 0.12, 0.2, 1.0],
    "mask": [True] * 6 + [False]}}}


def test_tiny_nora_runs_a_widowx_task_with_video(sim_server, tmp_path):
    """The issue's done-when: `nora-bench run widowx_real --policy nora --robot-host 127.0.0.1`
    against a server that encodes its observations as WidowXActionServer does; the tiny NORA
    (real Qwen2.5-VL classes) asks for the camera, the video is on, and every video frame is the
    frame the stand-in encoded (JPEG, then the video's H.264), in the same channel order."""
    from nora_bench.policies.tiny_nora import build_tiny_nora, fit_demo_fast, smooth_chunks
    from nora_bench.video import read_frames

    fast = fit_demo_fast(seed=0)
    for seed in range(200):  # a chunk whose FAST+ tokens are distinct (the tiny model's chain)
        ids = fast.encode(smooth_chunks(1, 1, seed=seed)[0])
        if len(set(ids)) == len(ids):
            break
    ckpt = build_tiny_nora(tmp_path / "nora-tiny", emit=ids, fast=fast, time_horizon=1, norm_stats=BRIDGE_STATS)
    frames = tmp_path / "frames"
    frames.mkdir()
    port = sim_server("--record-frames", str(frames))
    out = tmp_path / "run"
    p = Process([*CLI, "run", "widowx_real", "--policy", "nora", "--checkpoint", str(ckpt), "--robot-host", "127.0.0.1",
                 "--robot-port", str(port), "--tasks", "0", "--trials", "1", "--max-steps", "4", "--out", str(out)],
                stdin=True)
    try:
        p.expect("press Enter to start", timeout=180)
        p.send("")
        p.expect("Outcome? s = success, f = failure", timeout=180)
        p.send("f")
        rc, text = p.finish(timeout=180)
    finally:
        p.stop()
    assert rc == 0, text
    [r] = records(out)
    assert r["policy"] == "nora" and r["checkpoint"] == str(ckpt)
    assert (r["termination"], r["success"], r["env_steps"], r["queries"]) == ("step_limit", False, 4, 4), r
    assert r["decode_failures"] == 0 and r["error"] is None
    info = r["env_info"]
    assert info["image_encoding"] == "jpeg" and info["image_shape"] == [480, 640, 3]
    assert info["agentlace_config_hash"] == widowx_config(port).agentlace_hash()
    assert info["config_hash"] == widowx_config(port).digest()
    assert 0 < info["jpeg_decode_ms_mean"] <= info["jpeg_decode_ms_max"]
    video = read_frames(str(out / r["video"]))
    sent = np.stack([np.load(f) for f in sorted(frames.glob("frame_*.npy"))])
    assert video.shape == sent.shape == (5, 480, 640, 3)  # the reset's observation and one per step
    err = np.abs(video.astype(int) - sent).mean(axis=(1, 2, 3))
    swapped = np.abs(video[..., ::-1].astype(int) - sent).mean(axis=(1, 2, 3))
    assert (err < 4).all() and (swapped > 4 * err).all(), (err, swapped)
    assert np.abs(sent[-1].astype(int) - sent[0]).mean() > 0.5  # the policy's actions moved the arm


@pytest.mark.parametrize("policy", ["zero", "random"])
def test_plumbing_policies_send_bridge_gripper_values(sim_server, tmp_path, policy):
    """The WidowX env declares the Bridge convention (bridge_data_robot `move_gripper`: 1.0 open,
    0.0 closed); the zero and random policies follow it: what the stand-in received, and the record."""
    from nora_bench.envs.widowx import WidowXEnv as Env
    from nora_bench.types import BRIDGE_GRIPPER

    assert Env.action_spec.gripper == BRIDGE_GRIPPER and Env.action_spec.dummy_action[-1] == 1.0
    rec = tmp_path / "rec"
    rec.mkdir()
    port = sim_server("--record-frames", str(rec))
    out = tmp_path / "run"
    p = Process([*CLI, "run", "widowx_real", "--policy", policy, "--robot-host", "127.0.0.1", "--robot-port", str(port),
                 "--tasks", "0", "--trials", "1", "--max-steps", "8", "--out", str(out)], stdin=True)
    try:
        p.expect("press Enter to start")
        p.send("")
        p.expect("Outcome?")
        p.send("f")
        rc, text = p.finish()
    finally:
        p.stop()
    assert rc == 0, text
    sent = np.array([json.loads(line) for line in (rec / "actions.jsonl").read_text().splitlines()])
    assert sent.shape == (8, 7)
    if policy == "zero":
        assert (sent == [0, 0, 0, 0, 0, 0, 1.0]).all()  # no motion, gripper open
    else:
        assert set(sent[:, -1]) <= {0.0, 1.0}
    [r] = records(out)
    assert r["env_info"]["gripper_outside_convention"] == 0


def test_interrupted_session_resumes_at_the_next_trial(sim_server, tmp_path):
    port = sim_server()
    out = tmp_path / "run"
    args = run_args("widowx_real", port, out, "--tasks", "1", "--trials", "2", "--max-steps", "3")
    p = Process(args, stdin=True)
    try:
        p.expect("trial 1 ===")
        p.expect("press Enter to start")
        p.send("")
        p.expect("Outcome? s = success, f = failure")
        p.send("s")
        p.expect("trial 2 ===")
        p.expect("press Enter to start")
        p.send("q")
        rc, text = p.finish()
    finally:
        p.stop()
    assert rc == 2 and "run the same command again to resume" in text, text
    assert [r["trial"] for r in records(out)] == [0]

    p = Process(args, stdin=True)
    try:
        p.expect("(resuming: 1 done)")
        line = p.expect("===")
        assert "trial 2 ===" in line  # trial 1 is not asked again
        p.expect("press Enter to start")
        p.send("")
        p.expect("Outcome?")
        p.send("f")
        rc, text = p.finish()
    finally:
        p.stop()
    assert rc == 0, text
    recs = records(out)
    assert [(r["trial"], r["success"]) for r in recs] == [(0, True), (1, False)]


def test_lost_connection_ends_the_episode_with_its_reason(sim_server, tmp_path):
    # A generous request timeout: on a loaded machine an ordinary observation must never look like a lost robot.
    port = sim_server("--die-after-steps", "4")
    out = tmp_path / "run"
    p = Process(run_args(quick_suite(tmp_path, timeout_s=5.0), port, out, "--tasks", "0", "--trials", "2",
                         "--max-steps", "20"), stdin=True)
    try:
        p.expect("press Enter to start")
        p.send("")
        line = p.expect("episode over after")
        assert "env_failure: the connection to the robot was lost" in line
        p.expect("Outcome?")
        p.send("f")
        # The next trial cannot reach the robot: the operator may retry or end the session.
        p.expect("trial 2 ===")
        p.expect("press Enter to start")
        p.send("")
        p.expect("did not answer 'hash' within 5 s")
        p.expect("Press Enter to retry")
        p.send("")
        p.expect("Press Enter to retry")
        p.send("q")
        rc, text = p.finish()
    finally:
        p.stop()
    assert rc == 2 and "run the same command again to resume" in text, text
    (r,) = records(out)
    assert r["termination"] == "env_failure" and r["success"] is False
    assert "did not answer 'step_action' within 5 s" in r["error"]
    assert r["env_info"]["ended_by"] == "connection_lost" and r["env_steps"] == 4
    assert r["env_info"]["config_hash"] == widowx_config(port).digest()
    assert r["video"] and (out / r["video"]).is_file()  # what was recorded before the loss is kept


def test_unreachable_robot_is_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    p = Process(run_args(quick_suite(tmp_path, timeout_s=1.0), port, tmp_path / "run", "--tasks", "0"))
    rc, text = p.finish()
    assert rc == 2, text
    assert f"the robot server at tcp://127.0.0.1:{port} did not answer 'hash' within 1 s" in text


def test_operator_on_a_real_terminal(sim_server, tmp_path):
    """The same prompts on a pseudo-terminal: the terminal's Enter (carriage return) starts the
    episode, stops it early, and answers the outcome."""
    import pty

    port = sim_server()
    out = tmp_path / "run"
    master, slave = pty.openpty()
    proc = subprocess.Popen(run_args("widowx_real", port, out, "--tasks", "0", "--trials", "1", "--max-steps", "50"),
                            env=ENV, cwd=REPO, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""

    def wait_for(text: str, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text.encode() not in seen:
            assert time.monotonic() < deadline, f"no {text!r} on the terminal:\n{seen.decode(errors='replace')}"
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    assert text.encode() in seen, seen.decode(errors="replace")

    try:
        wait_for("press Enter to start")
        os.write(master, b"\r")
        wait_for("press Enter to stop the episode early")
        time.sleep(0.8)
        os.write(master, b"\r")
        wait_for("Outcome?")
        os.write(master, b"s\r")
        wait_for("records:")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    (r,) = records(out)
    assert r["success"] is True and r["termination"] == "success"
    assert r["env_info"]["ended_by"] == "operator_stop" and 0 < r["env_steps"] < 50
