import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]
# Ray worker processes import test-only policies (tests/fault_policies.py) by module name.
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
ARTIFACTS = REPO / "test-artifacts"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
    """Run `nora-bench` as a user would, in a subprocess of this interpreter."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "nora_bench.cli", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, input=input)


@pytest.fixture
def ray_local():
    """A real local Ray for one test, shut down afterwards."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False,
             _system_config={"max_direct_call_object_size": 1 << 20})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
