"""Model-image pipelines: how a camera frame becomes the image a model sees (a registry by name).

- `openvla_tf`: the published LIBERO preprocessing, bit-exact. OpenVLA's `resize_image` (imported by
  NORA's LIBERO script; openvla/openvla c8f03f4 `experiments/robot/libero/libero_utils.py`):
  `tf.image.encode_jpeg` (quality 95), `tf.io.decode_image`, `tf.image.resize(..., "lanczos3",
  antialias=True)`, round, clip, uint8. Needs TensorFlow (`pip install "nora-bench[tf]"`).
- `openvla`: the same steps in Pillow (no TensorFlow). Not bit-exact: measured on LIBERO frames
  (bench/bench_images.py) it differs in most pixels by one or two levels, at most about ten.
- `lanczos`: a Lanczos resize only (NORA-1.5's code resizes with dlimp, TF lanczos3), in Pillow.
- `qwen`: the frame as it is; Qwen's processor resizes it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from nora_bench import UserError


def pillow_openvla(image: np.ndarray, size: int) -> np.ndarray:
    """OpenVLA's preprocessing approximated with Pillow: JPEG round trip at quality 95, Lanczos resize."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    buf.seek(0)
    img = Image.open(buf).convert("RGB")
    return np.asarray(img.resize((size, size), Image.LANCZOS))


def tf_openvla(image: np.ndarray, size: int) -> np.ndarray:
    """OpenVLA's `resize_image` in TensorFlow, step for step (run in the TensorFlow helper process)."""
    return _tf_helper().call("resize", np.ascontiguousarray(image, dtype=np.uint8), int(size))


def _tf_resize(image: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf

    img = tf.image.encode_jpeg(image)  # quality 95 (TF's default)
    img = tf.io.decode_image(img, expand_animations=False, dtype=tf.uint8)
    img = tf.image.resize(img, (size, size), method="lanczos3", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8).numpy()


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def _helper_main(conn) -> None:
    """The TensorFlow helper: answers (name, args) with ("ok", result) or ("error", text)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    calls = {"resize": _tf_resize, "version": _tf_version}
    while True:
        try:
            name, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", calls[name](*args)))
        except BaseException as e:  # noqa: BLE001 - reported to the caller, who raises it
            conn.send(("error", f"{type(e).__name__}: {e}"))


class TensorFlowHelper:
    """TensorFlow in a child process of its own: TensorFlow and MuJoCo's EGL rendering (Mesa llvmpipe)
    segfault when loaded into one process, in either order (measured), and env workers render."""

    def __init__(self):
        import multiprocessing
        import threading

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_helper_main, args=(child,), daemon=True, name="nora-bench-tensorflow")
        self._proc.start()
        child.close()
        self._lock = threading.Lock()

    def call(self, name: str, *args):
        with self._lock:
            try:
                self._conn.send((name, args))
                status, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                raise RuntimeError(f"the TensorFlow helper process died (exit code {self._proc.exitcode})") from None
        if status != "ok":
            raise RuntimeError(f"TensorFlow helper: {value}")
        return value


@lru_cache(maxsize=1)
def _tf_helper() -> TensorFlowHelper:
    return TensorFlowHelper()


def pillow_lanczos(image: np.ndarray, size: int) -> np.ndarray:
    """A Lanczos resize only (dlimp's `resize_image` in NORA-1.5's code is TF lanczos3; done with Pillow)."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))


def unchanged(image: np.ndarray, size: int) -> np.ndarray:
    return image


@dataclass(frozen=True)
class ImagePipeline:
    name: str
    run: Callable[[np.ndarray, int], np.ndarray]
    description: str
    requires: str | None = None  # a Python package the pipeline imports

    def info(self) -> dict[str, str]:
        """What a run records about the pipeline (with the version of what it needs)."""
        out = {"image_pipeline": self.name}
        if self.requires:
            from importlib.metadata import PackageNotFoundError, version

            for dist in (f"{self.requires}-cpu", self.requires):
                try:
                    out[dist] = version(dist)
                    break
                except PackageNotFoundError:
                    continue
        return out


PIPELINES: dict[str, ImagePipeline] = {p.name: p for p in (
    ImagePipeline("openvla_tf", tf_openvla, "OpenVLA's TensorFlow preprocessing, bit-exact", requires="tensorflow"),
    ImagePipeline("openvla", pillow_openvla, "OpenVLA's preprocessing in Pillow (not bit-exact)"),
    ImagePipeline("lanczos", pillow_lanczos, "a Lanczos resize only, in Pillow (NORA-1.5's dlimp resize)"),
    ImagePipeline("qwen", unchanged, "the frame as it is; Qwen's processor resizes it"),
)}


def pipeline(name: str) -> ImagePipeline:
    if name not in PIPELINES:
        raise UserError(f"unknown image_resize {name!r}: use one of {', '.join(PIPELINES)}")
    return PIPELINES[name]


def check_pipeline(name: str) -> ImagePipeline:
    """The pipeline, after checking what it needs works here (one clear line when not)."""
    p = pipeline(name)
    if p.requires == "tensorflow":
        import importlib.util

        problem = None if importlib.util.find_spec("tensorflow") else "it is not installed"
        if problem is None:
            try:
                _tf_helper().call("version")
            except RuntimeError as e:
                _tf_helper.cache_clear()
                problem = str(e)
        if problem:
            raise UserError(f"image_resize {name} (the published TensorFlow preprocessing) needs TensorFlow, and "
                            f"{problem}: pip install 'nora-bench[tf]' (tensorflow-cpu), or use image_resize: "
                            f"openvla (Pillow, not bit-exact)")
    return p
