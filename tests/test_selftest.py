"""`nora-bench selftest` as a user runs it, and its checks failing when they should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def test_selftest_command_passes(tmp_path):
    """Every check of the command, on one expert episode (the default is 2 trials on 2 workers: the
    same checks on a second episode; Ray runs with 2 workers and videos are tests/test_run.py's)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    r = subprocess.run([sys.executable, "-m", "nora_bench.cli", "selftest", "--trials", "1", "--out", str(tmp_path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("simulator and Ray workers", "rendering and videos", "success detection (expert succeeds)",
                  "success detection (doing nothing fails)", "tables"):
        assert f"PASS  {check}" in r.stdout, r.stdout
    assert "selftest passed" in r.stdout
    videos = sorted((tmp_path / "expert" / "videos").rglob("*.mp4"))
    assert len(videos) == 1 and all(v.stat().st_size > 10_000 for v in videos)
    said = " ".join(r.stdout.split())
    assert "1/1 episodes recorded" in said and "passed in 1/1 expert episodes" in said


def test_video_check_fails_on_blank_video(tmp_path):
    """The rendering check is not a formality: a black video fails it."""
    import imageio.v3 as iio

    from nora_bench.selftest import _video_check

    (tmp_path / "videos").mkdir()
    iio.imwrite(tmp_path / "videos" / "black.mp4", np.zeros((10, 64, 64, 3), dtype=np.uint8), fps=10)
    check = _video_check(tmp_path, pd.DataFrame({"video": ["videos/black.mp4"]}))
    assert not check.ok and "blank" in check.detail
    missing = _video_check(tmp_path, pd.DataFrame({"video": [None]}))
    assert not missing.ok and "0 video(s) for 1 episodes" in missing.detail
