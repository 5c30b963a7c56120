"""Rollout videos: frames streamed into an H.264 mp4 with imageio-ffmpeg."""

from __future__ import annotations

import os
import tempfile

import imageio.v2 as imageio
import numpy as np

FPS = 20  # LIBERO's control frequency: videos play in real time


class VideoWriter:
    """Streams frames to a temporary mp4; `finish()` returns the file's bytes (None if no frame)."""

    def __init__(self, fps: int = FPS):
        fd, self.path = tempfile.mkstemp(suffix=".mp4", prefix="nora-bench-")
        os.close(fd)
        self._writer = imageio.get_writer(self.path, fps=fps, codec="libx264", pixelformat="yuv420p",
                                          macro_block_size=1, ffmpeg_log_level="error")
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        self._writer.append_data(np.ascontiguousarray(frame, dtype=np.uint8))
        self.frames += 1

    def finish(self) -> bytes | None:
        try:
            self._writer.close()
            if self.frames == 0:
                return None
            with open(self.path, "rb") as f:
                return f.read()
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the temporary file (an episode that ended without a result leaves nothing in /tmp)."""
        try:
            self._writer.close()
        except Exception:
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def read_frames(path: str) -> np.ndarray:
    """All frames of a video (T x H x W x 3), for tests and reports."""
    return np.stack(imageio.mimread(path, memtest=False))
