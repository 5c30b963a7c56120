"""The bridge_data_robot WidowX wire protocol, written for nora-bench (REFERENCE.md section 4).

ZeroMQ REQ/REP; every message is an lz4-frame-compressed pickle of a dict:
``{"type": "hash"}`` -> ``{"success": True, "payload": <ActionConfig JSON>}``,
``{"type": "obs", "keys": [...]}`` -> ``{"image", "state", "full_image"}``,
``{"type": "act", "key": K, "payload": {...}}`` -> ``{"status": WidowXStatus}``.

`full_image` travels as JPEG bytes (`mat_to_jpeg` on the server, `jpeg_to_mat` in the client,
both OpenCV, as agentlace/edgeml `internal/utils.py` define them; bridge_data_robot since commit
6325002). The agentlace/edgeml packages are not on PyPI, so this module has its own client (and
the server half that the stand-in robot uses). Unpickling network data can execute code: we
unpickle with `RestrictedUnpickler`, which admits only the types the protocol carries (dicts,
lists, tuples, sets, numbers, strings, bytes, numpy arrays and scalars) and refuses anything else.

Upstream versions read: rail-berkeley/bridge_data_robot a902e5b96c518deddc4d756c26f32d033cef5718
(2024-06-24, `widowx_envs/widowx_envs/widowx_env_service.py`), youliangtan/agentlace
76984f9b854b9ad88c78b3e5f0319e6e3c573e34 (2025-03-12; its `internal/utils.py` is unchanged
since the edgeml name that bridge_data_robot imports).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import lz4.frame
import numpy as np

from nora_bench import UserError

DEFAULT_PORT = 5556
# A decompressed message larger than this is refused (an lz4 bomb would exhaust memory). A
# 640x480 camera frame plus a 256x256 float image is about 1.7 MB.
MAX_MESSAGE_BYTES = 64 * 2**20


class WidowXStatus:
    NO_CONNECTION = 0
    SUCCESS = 1
    EXECUTION_FAILURE = 2
    NOT_INITIALIZED = 3

    NAMES = {0: "NO_CONNECTION", 1: "SUCCESS", 2: "EXECUTION_FAILURE", 3: "NOT_INITIALIZED"}


# -- errors ------------------------------------------------------------------------------------
class ProtocolError(UserError):
    """The robot server broke the protocol or could not be reached; the message says what to do."""


class ForbiddenPickle(ProtocolError):
    """A message held a pickled type the protocol never carries (it could execute code)."""


class ConfigMismatch(ProtocolError):
    """The server's ActionConfig (hash handshake) differs from the client's."""


class RobotTimeout(ProtocolError):
    """The server did not answer in time (lost connection, robot computer down)."""


class ObservationError(ProtocolError):
    """The robot's observation cannot be used (an image that does not decode, a wrong shape)."""


# -- configuration and its hash ----------------------------------------------------------------
@dataclass
class ActionConfig:
    """The agentlace ActionConfig; field order matters: its JSON is what the handshake compares."""

    port_number: int
    action_keys: list[str]
    observation_keys: list[str]
    broadcast_port: int | None = None
    version: str = "0.0.1"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def digest(self) -> str:
        return config_digest(self.to_json())

    def agentlace_hash(self) -> str:
        return agentlace_config_hash(self.to_json())


def config_digest(config_json: str) -> str:
    """Our config hash: md5 of the JSON's UTF-8 bytes (independent of any pickle protocol)."""
    return hashlib.md5(config_json.encode()).hexdigest()


def agentlace_config_hash(config_json: str) -> str:
    """The hash agentlace's handshake compares: `compute_hash(json)` = md5 of the *pickled* JSON
    string, pickled with this Python's default protocol (agentlace `internal/utils.py`)."""
    return hashlib.md5(pickle.dumps(config_json)).hexdigest()


WIDOWX_ACTION_KEYS = ["init", "move", "gripper", "reset", "step_action", "reboot_motor"]
WIDOWX_OBSERVATION_KEYS = ["image", "state", "full_image"]


def widowx_config(port: int = DEFAULT_PORT, version: str = "0.0.1") -> ActionConfig:
    """The WidowX server's config (bridge_data_robot's DefaultActionConfig) for a port."""
    return ActionConfig(port_number=port, action_keys=list(WIDOWX_ACTION_KEYS),
                        observation_keys=list(WIDOWX_OBSERVATION_KEYS), broadcast_port=port + 1, version=version)


# -- the camera image ----------------------------------------------------------------------------
# A JPEG whose header claims more pixels than this is refused before decoding (a few bytes could
# otherwise ask OpenCV for gigabytes). The bridge cameras send 640x480.
MAX_IMAGE_PIXELS = 4096 * 4096
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


def mat_to_jpeg(img: np.ndarray) -> bytes:
    """agentlace `mat_to_jpeg`: `cv2.imencode(".jpg", img)` (OpenCV's default quality, 95)."""
    import cv2

    _, buf = cv2.imencode(".jpg", img)
    return buf.tobytes()


def jpeg_to_mat(buf: bytes) -> np.ndarray | None:
    """agentlace `jpeg_to_mat`: `cv2.imdecode(..., IMREAD_COLOR)`; None when the bytes do not decode.

    OpenCV decodes into the channel order it encoded from, so the array comes back in the server's
    order: RGB (bridge_data_robot's `render()` flips the camera's BGR before `mat_to_jpeg`). A
    decoder that follows the JPEG standard (PIL, imageio) would swap R and B.
    """
    import cv2

    return cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)


@dataclass
class CameraImage:
    """The robot's `full_image` as the policy gets it, and how it travelled."""

    array: np.ndarray  # HxWx3 uint8, RGB
    encoding: str  # "jpeg" (bridge_data_robot since 6325002) or "raw" (an older server's array)
    wire_bytes: int
    decode_s: float = 0.0


def decode_full_image(value: Any, key: str = "full_image") -> CameraImage:
    """JPEG bytes (decoded as the reference client does) or a raw HxWx3 uint8 array (older servers)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        buf = bytes(value)
        if not buf.startswith(JPEG_SOI):
            raise ObservationError(f"the robot's {key!r} is {len(buf)} bytes that are not a JPEG image (they start "
                                   f"{buf[:8]!r}): check that the server runs bridge_data_robot's mat_to_jpeg")
        if not buf.rstrip(b"\x00").endswith(JPEG_EOI):
            # libjpeg decodes a truncated JPEG without complaint, grey below the cut: refuse it.
            raise ObservationError(f"the robot's {key!r} JPEG is truncated ({len(buf)} bytes, no end-of-image "
                                   "marker): the image was cut off on its way; check the robot computer's network")
        w, h = _jpeg_size(buf, key)
        if w * h > MAX_IMAGE_PIXELS:
            raise ObservationError(f"the robot's {key!r} JPEG claims {w}x{h} pixels, more than a camera sends "
                                   f"({MAX_IMAGE_PIXELS} at most): refused before decoding")
        t = time.perf_counter()
        img = jpeg_to_mat(buf)
        dt = time.perf_counter() - t
        if img is None:
            raise ObservationError(f"the robot's {key!r} is {len(buf)} bytes that do not decode as a JPEG image: "
                                   "check the robot computer's camera and server log")
        return CameraImage(img, "jpeg", len(buf), dt)
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
            raise ObservationError(f"the robot's {key!r} is a {value.dtype} array of shape {value.shape}, expected "
                                   "JPEG bytes or an HxWx3 uint8 image: is this a bridge_data_robot WidowX server?")
        return CameraImage(value, "raw", value.nbytes)
    raise ObservationError(f"the robot's {key!r} is {type(value).__name__} {_short(value)}, expected JPEG bytes "
                           "or an HxWx3 uint8 image: is this a bridge_data_robot WidowX server?")


def _jpeg_size(buf: bytes, key: str) -> tuple[int, int]:
    """Width and height from the JPEG header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(buf)) as im:
            return im.size
    except Image.DecompressionBombError:
        raise ObservationError(f"the robot's {key!r} JPEG claims more pixels than a camera sends "
                               f"({MAX_IMAGE_PIXELS} at most): refused before decoding") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ObservationError(f"the robot's {key!r} is {len(buf)} bytes that do not decode as a JPEG image (no "
                               "valid JPEG header): check the robot computer's camera and server log") from None


# -- encoding ----------------------------------------------------------------------------------
def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy.core import multiarray, numeric

    reconstruct, scalar, frombuffer = multiarray._reconstruct, multiarray.scalar, numeric._frombuffer
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # numpy 1.x writes numpy.core.*, numpy 2.x numpy._core.*: a robot computer may run either.
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{core}.multiarray", "scalar")] = scalar
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return out


# The only globals a protocol message may name. `_codecs.encode` is how protocol-2 pickles
# (Python 2 compatible) spell bytes, `__builtin__.set` how they spell sets.
_ALLOWED: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    **{(module, t.__name__): t for module in ("builtins", "__builtin__") for t in (set, frozenset, complex)},
    ("_codecs", "encode"): __import__("codecs").encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles protocol messages only: any other global is refused before it is imported."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenPickle(
                f"refused a message from the robot server: it pickles {module}.{name}, which the WidowX protocol "
                "never carries (unpickling it could run code on this machine); check that the host and port "
                "point at a bridge_data_robot WidowX server you trust") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenPickle("refused a message from the robot server: it uses pickle persistent ids, "
                              "which the WidowX protocol never carries")


def _check_arrays(obj: Any, depth: int = 0) -> None:
    # An object-dtype array would hold arbitrary Python objects: refuse it like any foreign type.
    if depth > 64:
        raise ForbiddenPickle("refused a message from the robot server: nested more than 64 levels deep")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise ForbiddenPickle("refused a message from the robot server: it holds a numpy array of Python objects")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_arrays(k, depth + 1)
            _check_arrays(v, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_arrays(v, depth + 1)


def encode(message: Any) -> bytes:
    """agentlace's lz4 `compress`: `lz4.frame.compress(pickle.dumps(data))` (the default protocol)."""
    return lz4.frame.compress(pickle.dumps(message))


def decode(data: bytes) -> Any:
    """Decompress and unpickle one message with the restricted unpickler."""
    try:
        d = lz4.frame.LZ4FrameDecompressor()
        raw = d.decompress(data, max_length=MAX_MESSAGE_BYTES)
        if not d.eof:
            raise ProtocolError(f"refused a message from the robot server: larger than {MAX_MESSAGE_BYTES >> 20} MiB "
                                "uncompressed, or truncated")
    except RuntimeError as e:
        raise ProtocolError(f"a message from the robot server is not lz4-frame data ({e}): "
                            "is this port a bridge_data_robot WidowX server?") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw)).load()
    except ProtocolError:
        raise
    except Exception as e:
        raise ProtocolError(f"a message from the robot server could not be unpickled ({type(e).__name__}: {e})") from None
    _check_arrays(obj)
    return obj


# -- the client --------------------------------------------------------------------------------
class ActionClient:
    """A REQ socket to an ActionServer. Each call waits at most `timeout_s` for the answer.

    A timeout leaves a REQ socket unable to send again, so the socket is rebuilt after one.
    """

    def __init__(self, host: str, config: ActionConfig, timeout_s: float = 5.0):
        import zmq

        self.host, self.config, self.timeout_s = host, config, timeout_s
        self.address = f"tcp://{host}:{config.port_number}"
        self._zmq = zmq
        self._ctx = zmq.Context()
        self._socket = None
        self._connect()

    def _connect(self) -> None:
        zmq = self._zmq
        if self._socket is not None:
            self._socket.close(linger=0)
        self._socket = self._ctx.socket(zmq.REQ)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self.address)

    def request(self, message: dict, timeout_s: float | None = None) -> Any:
        zmq = self._zmq
        timeout = self.timeout_s if timeout_s is None else timeout_s
        sock = self._socket
        try:
            if not sock.poll(int(timeout * 1000), zmq.POLLOUT):
                raise TimeoutError
            sock.send(encode(message), flags=zmq.NOBLOCK)
            if not sock.poll(int(timeout * 1000), zmq.POLLIN):
                raise TimeoutError
            data = sock.recv(flags=zmq.NOBLOCK)
        except (TimeoutError, zmq.ZMQError) as e:
            self._connect()
            what = message.get("key") or message.get("type")
            detail = "" if isinstance(e, TimeoutError) else f" ({e})"
            raise RobotTimeout(f"the robot server at {self.address} did not answer {what!r} within {timeout:g} s{detail}: "
                               "check that the WidowX server is running and reachable from this machine") from None
        return decode(data)

    def handshake(self, timeout_s: float | None = None) -> str:
        """Compare the server's config hash with ours as agentlace's ActionClient does (md5 of the
        pickled JSON strings); returns our hash. Refuses a mismatch."""
        reply = self.request({"type": "hash"}, timeout_s)
        if not isinstance(reply, dict) or not isinstance(reply.get("payload"), str):
            raise ProtocolError(f"the server at {self.address} answered the config handshake with {_short(reply)}: "
                                "is this port a bridge_data_robot WidowX server?")
        ours, theirs = self.config.agentlace_hash(), agentlace_config_hash(reply["payload"])
        if ours != theirs:
            raise ConfigMismatch(
                f"the robot server at {self.address} speaks another protocol config (hash {theirs[:12]} != ours "
                f"{ours[:12]}; server config {reply['payload']}, ours {self.config.to_json()}): run a "
                f"bridge_data_robot WidowX server with the default action config on port {self.config.port_number}")
        return self.config.digest()

    def obs(self, keys: list[str] | None = None, timeout_s: float | None = None) -> Any:
        # The reference client sends the keys as a set (ActionClient turns its config's lists into sets).
        return self.request({"type": "obs", "keys": set(keys or self.config.observation_keys)}, timeout_s)

    def act(self, key: str, payload: dict | None = None, timeout_s: float | None = None) -> Any:
        if key not in self.config.action_keys:
            raise ValueError(f"unknown action key {key!r}; known: {', '.join(self.config.action_keys)}")
        return self.request({"type": "act", "key": key, "payload": payload or {}}, timeout_s)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._ctx.term()


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) < 200 else text[:200] + "..."


@dataclass
class RobotObservation:
    """One answer to `get_observation`, checked: the decoded camera image, and the rest as sent."""

    full_image: CameraImage
    state: np.ndarray | None  # [x, y, z, roll, pitch, yaw, gripper]
    image: np.ndarray | None  # (n_cams, 3*S*S) float32 in [0, 1], CHW per camera (unused by NORA)


class WidowXClient:
    """The WidowX robot API of bridge_data_robot's WidowXClient, over `ActionClient`.

    Unlike the reference, a missing answer raises `RobotTimeout` rather than returning None, an
    unusable observation raises `ObservationError`, and a status other than SUCCESS is returned
    for the caller to record.
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout_s: float = 5.0):
        self.client = ActionClient(host, widowx_config(port), timeout_s)
        try:
            self.config_hash = self.client.handshake()
        except BaseException:
            self.client.close()
            raise
        self.agentlace_config_hash = self.client.config.agentlace_hash()

    def _status(self, reply: Any) -> int:
        if not isinstance(reply, dict) or "status" not in reply:
            raise ProtocolError(f"the robot server answered an action with {_short(reply)} (expected a status)")
        return int(reply["status"])

    def init(self, env_params: dict, image_size: int = 256, timeout_s: float = 60.0) -> int:
        # Initialising the robot stack takes about 10 s the first time on the real robot.
        return self._status(self.client.act("init", {"env_params": env_params, "image_size": image_size}, timeout_s))

    def move(self, pose: np.ndarray, duration: float = 1.0, blocking: bool = False, timeout_s: float | None = None) -> int:
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape not in ((6,), (4, 4)):
            raise ValueError(f"a pose is [x, y, z, roll, pitch, yaw] or a 4x4 transform, not shape {pose.shape}")
        return self._status(self.client.act("move", {"pose": pose, "duration": duration, "blocking": blocking}, timeout_s))

    def move_gripper(self, state: float) -> int:
        """1.0 open, 0.0 closed."""
        return self._status(self.client.act("gripper", {"open": float(state)}))

    def step_action(self, action: np.ndarray, blocking: bool = False) -> int:
        action = np.asarray(action, dtype=np.float64)
        if action.shape not in ((5,), (7,)):
            raise ValueError(f"a WidowX action has 5 or 7 values, not shape {action.shape}")
        return self._status(self.client.act("step_action", {"action": action, "blocking": blocking}))

    def reset(self, timeout_s: float = 30.0) -> int:
        return self._status(self.client.act("reset", {}, timeout_s))

    def get_observation(self, timeout_s: float | None = None) -> RobotObservation:
        """The reference client's `get_observation`: `full_image` decoded with `jpeg_to_mat`."""
        obs = self.client.obs(timeout_s=timeout_s)
        if not isinstance(obs, dict):
            raise ObservationError(f"the robot server sent an observation that is not a dict: {_short(obs)}")
        if obs.get("full_image") is None:
            raise ObservationError(f"the robot's observation has no 'full_image' (keys: {', '.join(map(str, obs))}): "
                                   "check the server's camera_topics")
        state = obs.get("state")
        if isinstance(state, np.ndarray) and state.dtype.kind in "fiu" and state.shape == (7,):
            state = state.astype(np.float64)
        else:
            state = None  # the reference server sends {} before init; a policy that needs it is told
        image = obs.get("image")
        return RobotObservation(decode_full_image(obs["full_image"]), state,
                                image if isinstance(image, np.ndarray) else None)

    def close(self) -> None:
        self.client.close()


# -- the server half (the stand-in robot) --------------------------------------------------------
@dataclass
class ActionServer:
    """Answers hash/obs/act requests on a REP socket; requests are unpickled with the same restrictions."""

    config: ActionConfig
    on_obs: Callable[[Any], Any]  # -> the observation dict (or raw reply bytes via raw_replies)
    on_act: Callable[[str, dict], dict]
    host: str = "127.0.0.1"
    # Test hooks: a reply to send instead of the real one, by request type ("hash", "obs", "act").
    raw_replies: dict[str, bytes] = field(default_factory=dict)

    def serve(self, should_stop: Callable[[], bool] = lambda: False, poll_ms: int = 200) -> None:
        import zmq

        ctx = zmq.Context()

        def bind():
            sock = ctx.socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.bind(f"tcp://{self.host}:{self.config.port_number}")
            except zmq.ZMQError as e:
                sock.close(linger=0)
                raise ProtocolError(f"cannot listen on {self.host}:{self.config.port_number} ({e}): "
                                    "choose another --port") from None
            return sock

        sock = None
        try:
            sock = bind()
            while not should_stop():
                if not sock.poll(poll_ms, zmq.POLLIN):
                    continue
                data = sock.recv()
                try:
                    reply = self.handle(data)
                except Exception:
                    # bridge_data_robot's server main() on a callback exception: print it, stop the
                    # server, start a fresh one. The request is never answered (the client times out).
                    traceback.print_exc()
                    sock.close(linger=0)
                    sock = bind()
                    continue
                sock.send(reply)
        finally:
            if sock is not None:
                sock.close(linger=0)
            ctx.term()

    def handle(self, data: bytes) -> bytes:
        """agentlace ActionServer's dispatch: obs -> obs_callback(keys), act -> act_callback(key,
        payload) (any key: the WidowX server answers an unknown one EXECUTION_FAILURE), hash -> the
        config JSON, anything else -> "Invalid payload". Unlike agentlace, requests are unpickled
        with the restricted unpickler, and one that does not decode is answered rather than
        crashing the server."""
        try:
            msg = decode(data)
        except ProtocolError as e:
            return encode({"success": False, "message": str(e)})
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind in self.raw_replies:
            return self.raw_replies[kind]
        if kind == "obs":
            reply = self.on_obs(msg.get("keys"))
            return reply if isinstance(reply, bytes) else encode(reply)
        if kind == "act":
            return encode(self.on_act(msg.get("key"), msg.get("payload") or {}))
        if kind == "hash":
            return encode({"success": True, "payload": self.config.to_json()})
        return encode({"success": False, "message": "Invalid payload"})
