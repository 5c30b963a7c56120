"""The `fake` env kind (no simulator) through the whole harness: real Ray workers and a real batching
policy actor, and the in-process path; its options (step cost, success rule) and their errors."""

import time

import numpy as np
import pytest
import yaml

from nora_bench import UserError, results
from nora_bench.config import RunConfig
from nora_bench.envs import env_class, make_env
from nora_bench.episode import EpisodeSpec
from nora_bench.run.rundir import RunDir
from nora_bench.run.scheduler import ExecOptions, Scheduler


def fake_suite(tmp_path, **env_options) -> str:
    data = yaml.safe_load(open("suites/fake.yaml"))
    data["env_options"].update(env_options)
    path = tmp_path / "fake_suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_fake_runs_through_ray_workers_and_a_batching_policy_actor(tmp_path):
    config = RunConfig.resolve(suite="fake", policy="fixed-cost", tasks="0,1", trials=2, max_steps=30, video=False)
    sched = Scheduler(config, RunDir(tmp_path / "ray"), ExecOptions(workers=2, progress=False, max_wait_ms=20))
    assert sched.run() == 4
    df = results.load(tmp_path / "ray")
    assert sorted(df["key"]) == [f"fake/task00{t}/trial0{i}" for t in (0, 1) for i in (0, 1)]
    assert set(df["termination"]) == {"step_limit"} and (df["env_steps"] == 30).all() and (df["queries"] == 30).all()
    assert df["instruction"].tolist() == [f"fake task {t}" for t in df["task_id"]]
    stats = sched.policy_stats[0]  # every query went through the one batching actor
    assert stats["requests"] == 120 and 1 <= stats["max_batch"] <= 2


def test_fake_in_process_success_rule_and_video(tmp_path):
    suite = fake_suite(tmp_path, success_after=7, step_ms=2.0)
    config = RunConfig.resolve(suite=suite, policy="zero", tasks="2", trials=2, video=True)
    t = time.perf_counter()
    Scheduler(config, RunDir(tmp_path / "inproc"), ExecOptions(in_process=True, progress=False)).run()
    assert time.perf_counter() - t >= 2 * 7 * 0.002  # the step cost is paid (a lower bound only)
    df = results.load(tmp_path / "inproc")
    assert df["success"].all() and (df["env_steps"] == 7).all() and set(df["termination"]) == {"success"}
    assert all((tmp_path / "inproc" / v).is_file() for v in df["video"])
    assert all(r["timings"]["env_s"] >= 7 * 0.002 for r in RunDir(tmp_path / "inproc").records())


def test_fake_sampled_cost_and_success_are_seeded_per_episode():
    def episode(seed):
        spec = EpisodeSpec(suite="fake", task_id=0, trial=0, init_state=0, seed=seed, max_steps=50, env="fake",
                           num_steps_wait=0, camera_size=32, cameras=("agentview", "wrist"),
                           env_options=(("step_dist", "exponential"), ("step_ms", 0.1), ("success_p", 0.2)))
        env = make_env("fake")
        obs = env.reset(spec)
        assert obs.images["wrist"].shape == (32, 32, 3) and obs.images["agentview"].dtype == np.uint8
        steps = [env.step(env.dummy_action, render=False) for _ in range(40)]
        assert steps[0].observation.images == {}  # render=False: no images
        return [s.success for s in steps]

    a, b = episode(1), episode(1)
    assert a == b and 0 < sum(a) < 40 and a != episode(2)


@pytest.mark.parametrize("options, words", [({"step_mss": 1}, "unknown env_options step_mss"),
                                            ({"step_dist": "gamma"}, "step_dist 'gamma'"),
                                            ({"success_p": 2}, "success_p in [0, 1]")])
def test_fake_options_are_checked_before_any_episode(tmp_path, options, words):
    config = RunConfig.resolve(suite=fake_suite(tmp_path, **options), policy="zero", trials=1, video=False)
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]")):
        env_class("fake").check_run(config)


def test_an_interrupted_episode_leaves_no_video_file_behind(tmp_path, monkeypatch):
    """Ctrl-C in the middle of an episode: the interrupt goes on up, and the half-written mp4 in the
    temp folder is removed (it used to stay in /tmp for good)."""
    import tempfile

    from nora_bench.run.planning import expand
    from nora_bench.run.workers import EnvWorker

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    policy = tmp_path / "interrupting.yaml"
    policy.write_text('kind: "fault_policies:InterruptingPolicy"\nafter: 3\n')
    config = RunConfig.resolve(suite="fake", policy=str(policy), tasks="0", trials=1, video=True)
    worker = EnvWorker(config.policy, "fake")
    with pytest.raises(KeyboardInterrupt):
        worker.run(expand(config)[0])
    assert worker.policy.calls == 4  # it did get into the episode (frames were written)
    assert not list(tmp_path.glob("nora-bench-*.mp4"))
