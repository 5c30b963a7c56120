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


@pytest.fixture(scope="module")
def _module_ray():
    """The local Ray that the `ray_local` tests of one module share, shut down after the module."""
    import ray

    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def ray_local(_module_ray):
    """A real local Ray, started by the first test of a module that asks for it and kept for the
    module's other `ray_local` tests (a start costs ~8 s). Sharing is safe: each Scheduler builds its
    own worker and policy actors and kills them when it closes (run/scheduler.py RayBackend.close)."""
    ray = _module_ray
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False,
                 _system_config={"max_direct_call_object_size": 1 << 20})
    return ray


@pytest.fixture
def no_ray():
    """No Ray in this process: for a test that starts its own (a Cluster, a retried start) in a module
    whose `ray_local` tests share one."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


# A short real run through the CLI (zero policy, real LIBERO, two Ray workers, videos): made once per
# session and read by tests/test_run.py (records, videos, tables, rerun) and tests/test_review_page.py
# (report, review page, compare). The tests that use it only read it or add a report beside it.
ZERO_RUN_ARGS = ["run", "libero_spatial", "--policy", "zero", "--tasks", "0,1", "--trials", "2", "--workers", "2",
                 "--max-steps", "12"]


@pytest.fixture(scope="session")
def zero_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("runs") / "zeroA"
    proc = run_cli(*ZERO_RUN_ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
