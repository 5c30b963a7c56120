"""openpi's wire format: one msgpack map per binary websocket frame, numpy arrays as maps.

As `openpi_client/msgpack_numpy.py` (openpi-client 0.1.2): an array is
{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str, b"shape": shape}, a numpy scalar
{b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}. Object, void and complex arrays are
refused both ways: nothing on this wire can run code (no pickle).

The protocol: on connect the server sends one metadata map; then each request map gets one reply
map (`actions`: (H, D), plus `server_timing`), or a text frame with the error and a close (1011).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("V", "O", "c")


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"unsupported dtype on the openpi wire: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in _REFUSED_KINDS:
            raise ValueError(f"unsupported dtype on the openpi wire: {dtype}")
        return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"])
    if b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in _REFUSED_KINDS:
            raise ValueError(f"unsupported dtype on the openpi wire: {dtype}")
        return dtype.type(obj[b"data"])
    return obj


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_decode)
