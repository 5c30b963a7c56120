"""Image pipelines and reference scenes, measured side by side in one run.

1. The Pillow image path (`image_resize: openvla`) vs the published TensorFlow one (`openvla_tf`) on
   LIBERO agentview frames: max and mean absolute difference, share of differing pixel values.
2. The cost of a reference scene: the replayed resets before trial i's own reset (the worst case, a
   worker's first episode of a task being its last trial) vs one ordinary rendered soft reset.
"""

from __future__ import annotations

import time

import common  # noqa: F401  (sets up the path and rendering)
import numpy as np

from nora_bench.envs import make_env
from nora_bench.envs.libero_options import libero_spec_fields
from nora_bench.episode import EpisodeSpec
from nora_bench.policies.images import PIPELINES, check_pipeline

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


def spec(suite, trial, **kw):
    return EpisodeSpec(**libero_spec_fields(suite=suite, benchmark=suite, task_id=0, trial=trial, init_state=trial, seed=0, max_steps=1,
                       **kw))


def main() -> None:
    env = make_env("libero")
    frames, replay = [], {}
    try:
        for suite in SUITES:
            obs = env.reset(spec(suite, 0))
            for _ in range(10):
                obs = env.step(env.dummy_action).observation
            frames.append(obs.images["agentview"])
        # Scene replay: a fresh env (no cached RNG states), trial 49 first, then trial 0's reset alone.
        env.close()
        t = time.perf_counter()
        env.reset(spec("libero_10", 49))
        first = time.perf_counter() - t
        info = env.episode_info()["scene"]
        t = time.perf_counter()
        env.reset(spec("libero_10", 48, scene="episode"))
        plain = time.perf_counter() - t
        # The scene record keeps no timing (it is part of the episode's identity): the replay's cost is
        # the first reset's wall time less a plain reset's.
        replay = {"replayed": info["replayed_resets"], "replay_s": max(first - plain, 0.0), "first_reset_s": first,
                  "plain_reset_s": plain}
    finally:
        env.close()
    tf, pil = check_pipeline("openvla_tf"), PIPELINES["openvla"]
    print("image pipeline: Pillow (openvla) vs TensorFlow (openvla_tf, the published code), 224x224 from 256x256")
    print(f"{'suite':16} {'max':>4} {'mean':>6} {'differing values':>17}")
    all_d = []
    for suite, f in zip(SUITES, frames):
        d = np.abs(pil.run(f, 224).astype(int) - tf.run(f, 224).astype(int))
        all_d.append(d)
        print(f"{suite:16} {d.max():4d} {d.mean():6.3f} {100 * (d > 0).mean():16.1f}%")
    d = np.stack(all_d)
    print(f"{'all':16} {d.max():4d} {d.mean():6.3f} {100 * (d > 0).mean():16.1f}%")
    t = time.perf_counter()
    for f in frames * 5:
        tf.run(f, 224)
    t_tf = (time.perf_counter() - t) / (len(frames) * 5)
    t = time.perf_counter()
    for f in frames * 5:
        pil.run(f, 224)
    t_pil = (time.perf_counter() - t) / (len(frames) * 5)
    print(f"per image: TensorFlow helper {1000 * t_tf:.1f} ms, Pillow {1000 * t_pil:.1f} ms ({t_tf / t_pil:.1f}x)")
    print(f"reference scene, libero_10 task 0 trial 49 on a fresh worker: first reset {replay['first_reset_s']:.2f} s "
          f"with {replay['replayed']} resets replayed (about {replay['replay_s']:.2f} s, "
          f"{1000 * replay['replay_s'] / max(replay['replayed'], 1):.1f} ms each); a rendered soft reset "
          f"{replay['plain_reset_s']:.2f} s; replay / reset = {replay['replay_s'] / replay['plain_reset_s']:.2f}x")


if __name__ == "__main__":
    main()
