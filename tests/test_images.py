"""The model-image pipelines against the published TensorFlow preprocessing, on real LIBERO frames.

`published_resize_image` is written exactly as OpenVLA's `resize_image` (openvla/openvla
c8f03f48af692657d3060c19588038c7220e9af9, `experiments/robot/libero/libero_utils.py`), which NORA's
LIBERO script imports through `get_libero_image` (rotate 180 degrees, then resize to 224).
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest

from nora_bench import UserError
from nora_bench.policies import images
from nora_bench.policies.images import PIPELINES, check_pipeline

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="needs the tf extra (tensorflow-cpu, part of the test extra)")


def published_resize_image(img, resize_size):
    # Runs in a process of its own: TensorFlow and the MuJoCo renderer of this one segfault together.
    import tensorflow as tf

    assert isinstance(resize_size, tuple)
    img = tf.image.encode_jpeg(img)  # Encode as JPEG, as done in RLDS dataset builder
    img = tf.io.decode_image(img, expand_animations=False, dtype=tf.uint8)  # Immediately decode back
    img = tf.image.resize(img, resize_size, method="lanczos3", antialias=True)
    img = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
    return img.numpy()


@pytest.fixture(scope="module")
def frames():
    """Agentview frames (rotated as the published get_libero_image does) of two suites' scenes."""
    from nora_bench.envs import make_env
    from nora_bench.envs.libero_options import libero_spec_fields
    from nora_bench.episode import EpisodeSpec

    env = make_env("libero")
    out = []
    try:
        for suite, trial in (("libero_spatial", 0), ("libero_goal", 1)):
            s = EpisodeSpec(**libero_spec_fields(suite=suite, benchmark=suite, task_id=0, trial=trial, init_state=trial, seed=0, max_steps=1))
            obs = env.reset(s)
            out.append(obs.images["agentview"])
            out.append(env.step(np.array([0.5, 0.2, 0, 0, 0, 0, -1.0])).observation.images["agentview"])
    finally:
        env.close()
    return out


@pytest.fixture(scope="module")
def published(frames):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return list(pool.map(published_resize_image, frames, [(224, 224)] * len(frames)))


def test_openvla_tf_is_bit_identical_to_the_published_preprocessing(frames, published):
    ours = check_pipeline("openvla_tf")
    for frame, want in zip(frames, published):
        assert frame.shape == (256, 256, 3)
        got = ours.run(frame, 224)
        assert got.dtype == np.uint8 and got.shape == (224, 224, 3)
        np.testing.assert_array_equal(got, want)
    assert ours.info()["image_pipeline"] == "openvla_tf" and ours.info().get("tensorflow-cpu", ours.info().get("tensorflow"))


def test_pillow_path_differs_from_the_published_one(frames, published):
    """Why `openvla_tf` exists: the Pillow path (`openvla`) is close, not identical (bench/bench_images.py)."""
    diffs = [np.abs(PIPELINES["openvla"].run(f, 224).astype(int) - want.astype(int)) for f, want in zip(frames, published)]
    assert max(d.max() for d in diffs) > 0
    assert max(d.max() for d in diffs) < 40  # the same picture, not another one


def test_broken_tensorflow_is_one_clear_line(tmp_path, monkeypatch):
    """A TensorFlow that cannot be imported (here: a package that raises on import, first on the path)."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("raise ImportError('libtensorflow_framework.so.2: cannot open')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    images._tf_helper.cache_clear()
    try:
        with pytest.raises(UserError, match=r"needs TensorFlow, and .*cannot open.*pip install 'nora-bench\[tf\]'") as e:
            check_pipeline("openvla_tf")
        assert "\n" not in str(e.value)
    finally:
        images._tf_helper.cache_clear()
    with pytest.raises(UserError, match="unknown image_resize 'bicubic'"):
        check_pipeline("bicubic")
