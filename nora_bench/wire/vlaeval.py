"""vla-eval's wire format (allenai/vla-evaluation-harness, PyPI vla-eval 0.8.0).

One msgpack map per binary websocket frame: {type, payload, seq, timestamp}
(`protocol/messages.py`). Arrays are {"__ndarray__": True, data, dtype, shape} with only
bool/int/uint/float dtypes (`protocol/numpy_codec.py`); HWC uint8 images with 1, 3 or 4 channels
are sent as {"__image__": True, format: png | jpeg, data, shape} (`protocol/image_codec.py`; PNG
is vla-eval's default), or as plain arrays with image format `raw`.

The session: the benchmark sends `hello` {harness_version, protocol_version, benchmark}; the model
server answers `hello` {harness_version, protocol_version, model_server, capabilities,
observation_params?, action_spec?, observation_spec?}. `episode_start` {task} and `episode_end`
{metrics, steps, elapsed_sec} get no reply; each `observation` gets one `action` (its seq echoed)
or one `error` {error}; an error leaves the connection open.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
HELLO, OBSERVATION, ACTION, EPISODE_START, EPISODE_END, ERROR = (
    "hello", "observation", "action", "episode_start", "episode_end", "error")
MESSAGE_TYPES = (HELLO, OBSERVATION, ACTION, EPISODE_START, EPISODE_END, ERROR)
IMAGE_FORMATS = ("png", "jpeg", "raw")
_ALLOWED_KINDS = frozenset("biuf")


@dataclass
class Message:
    type: str
    payload: dict[str, Any]
    seq: int = 0
    timestamp: float = field(default_factory=time.time)


def _is_image(a: np.ndarray) -> bool:
    return a.ndim == 3 and a.dtype == np.uint8 and a.shape[2] in (1, 3, 4)


def _encoder(image_format: str):
    def encode(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            if image_format != "raw" and _is_image(obj):
                from PIL import Image

                buf = io.BytesIO()
                if image_format == "jpeg":
                    Image.fromarray(obj).save(buf, format="JPEG", quality=95)
                else:
                    Image.fromarray(obj).save(buf, format="PNG")
                return {"__image__": True, "format": image_format, "data": buf.getvalue(), "shape": list(obj.shape)}
            if obj.dtype.kind not in _ALLOWED_KINDS:
                raise ValueError(f"unsupported dtype on the vla-eval wire: {obj.dtype}")
            return {"__ndarray__": True, "data": obj.tobytes(), "dtype": obj.dtype.str, "shape": list(obj.shape)}
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        return obj

    return encode


def _decode(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    if "__image__" in obj:
        if obj.get("format") == "raw":
            return np.frombuffer(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        from PIL import Image

        return np.array(Image.open(io.BytesIO(obj["data"])))
    if "__ndarray__" in obj:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"disallowed numpy dtype on the vla-eval wire: {dtype}")
        return np.frombuffer(obj["data"], dtype=dtype).reshape(obj["shape"]).copy()
    return obj


def pack(message: Message, image_format: str = "png") -> bytes:
    raw = {"type": message.type, "payload": message.payload, "seq": message.seq, "timestamp": message.timestamp}
    return msgpack.packb(raw, default=_encoder(image_format), use_bin_type=True)


def unpack(data: bytes) -> Message:
    """A Message; ValueError naming what is wrong with a malformed frame."""
    if isinstance(data, str):
        raise ValueError(f"expected a binary frame, got text: {data[:200]!r}")
    try:
        raw = msgpack.unpackb(data, object_hook=_decode, raw=False)
    except Exception as e:
        raise ValueError(f"cannot decode a vla-eval frame ({len(data)} bytes): {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"expected a msgpack map, got {type(raw).__name__}")
    missing = [k for k in ("type", "payload", "seq", "timestamp") if k not in raw]
    if missing:
        raise ValueError(f"vla-eval message lacks {', '.join(missing)} (keys: {sorted(raw)})")
    if raw["type"] not in MESSAGE_TYPES:
        raise ValueError(f"unknown vla-eval message type {raw['type']!r}")
    return Message(raw["type"], raw["payload"], raw["seq"], raw["timestamp"])
