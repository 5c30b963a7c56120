"""Distractor objects: catalog and choice, BDDL rewriting (read back by LIBERO's own parser), and real
LIBERO scenes: built, init state copied by joint name, distractors placed, rendered, success still
detected, placements deterministic; then the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nora_bench import UserError
from nora_bench.envs import configure_rendering
from nora_bench.envs import distractors as D

configure_rendering()
SPATIAL0 = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def spatial_bddl() -> str:
    from nora_bench.envs.libero import task_info

    return task_info("libero_spatial", 0)["bddl"]


# -- catalog and choice ---------------------------------------------------------------------------------
def test_catalog_holds_loadable_tabletop_objects_only():
    cat = D.catalog()
    assert {"ketchup", "butter", "alphabet_soup", "white_yellow_mug"} <= set(cat)
    # Furniture, fixtures and objects whose assets are not installed are not distractors.
    assert not {"wooden_cabinet", "flat_stove", "microwave", "wine_rack", "dining_set_group", "corn"} & set(cat)


def test_instruction_categories_are_never_sampled():
    assert D.named_by(SPATIAL0, "akita_black_bowl") and D.named_by(SPATIAL0, "plate")
    assert D.named_by(SPATIAL0, "black_book")  # shares 'black': could confuse a policy
    assert D.named_by("pick up the black bowl next to the cookie box", "cookies")
    assert not D.named_by(SPATIAL0, "ketchup")
    assert not D.named_by(SPATIAL0, "macaroni_and_cheese")  # 'and' names nothing
    scene = {"akita_black_bowl", "cookies", "glazed_rim_porcelain_ramekin", "plate"}
    for seed in range(20):
        chosen = D.choose(3, (), SPATIAL0, scene, np.random.default_rng(seed))
        assert len(set(chosen)) == 3
        assert not [c for c in chosen if c in scene or D.named_by(SPATIAL0, c)]


def test_choice_is_deterministic_in_suite_task_trial_seed():
    from nora_bench.envs.libero import task_info
    from nora_bench.envs.libero_options import libero_spec_fields
    from nora_bench.episode import EpisodeSpec

    spec = EpisodeSpec(**libero_spec_fields(suite="libero_spatial", benchmark="libero_spatial", task_id=0, trial=0, init_state=0,
                       seed=5, max_steps=10, distractors=2))
    info = task_info("libero_spatial", 0)
    D._categories_cached.cache_clear()
    first = D.categories_for(spec, info)
    D._categories_cached.cache_clear()
    assert D.categories_for(spec, info) == first
    others = {D.categories_for(replace(spec, trial=t, init_state=t), info) for t in range(1, 6)}
    assert len(others | {first}) > 1  # other trials draw other objects


def test_bad_names_are_clear_errors():
    with pytest.raises(UserError, match="unknown distractor object.*'ketchupp'.*valid names: .*ketchup"):
        D.choose(0, ("ketchupp",), SPATIAL0, set(), np.random.default_rng(0))
    with pytest.raises(UserError, match="plate.*share a name with the instruction"):
        D.choose(0, ("yellow_plate",), SPATIAL0, set(), np.random.default_rng(0))
    with pytest.raises(UserError, match="--distractors 3 does not match the 1 distractor names"):
        D.choose(3, ("ketchup",), SPATIAL0, set(), np.random.default_rng(0))
    with pytest.raises(UserError, match="only .* catalog objects fit this task"):
        D.choose(500, (), SPATIAL0, set(), np.random.default_rng(0))


def test_suite_presets(tmp_path):
    from nora_bench.config import load_suite

    for name in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
        s = load_suite(f"{name}_distractors")
        assert s.benchmark == name and s.distractors == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nenv: libero\nbenchmark: libero_spatial\nnum_tasks: 10\nmax_steps: 9\n"
                   "distractor_names: [ketchup, spoon]\n")
    with pytest.raises(UserError, match="unknown distractor object.*'spoon'.*valid names"):
        load_suite(str(bad))


def test_rewritten_bddl_parses_with_libero_and_keeps_the_task():
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    src = Path(spatial_bddl()).read_text()
    text, instances = D.rewrite_bddl(src, ["ketchup", "plate", "butter"])
    assert instances == ["ketchup_1", "plate_2", "butter_1"]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nora-test-{os.getpid()}.bddl"
    path.write_text(text)
    try:
        new, old = robosuite_parse_problem(str(path)), robosuite_parse_problem(spatial_bddl())
    finally:
        path.unlink()
    assert new["objects"]["ketchup"] == ["ketchup_1"] and new["objects"]["butter"] == ["butter_1"]
    assert new["objects"]["plate"] == ["plate_1", "plate_2"]  # same category: one line, both kept
    for key in ("goal_state", "initial_state", "regions", "fixtures", "obj_of_interest", "language_instruction"):
        assert new[key] == old[key], key


# -- the CLI (before the scenes fixture builds its env: one LIBERO env at a time) ---------------
def test_cli_run_with_chunk_rule_and_distractors(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nora_bench.cli", "run", "libero_spatial", "--policy", "zero-agentview",
           "--chunk-exec", "first:1", "--distractors", "2", "--tasks", "0", "--trials", "1", "--workers", "1",
           "--max-steps", "6", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    (rec,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert rec["chunk_exec"] == "first" and rec["distractors"] == 2 and rec["termination"] == "step_limit"
    assert (rec["env_steps"], rec["queries"]) == (6, 6)
    placed = rec["env_info"]["distractors"]
    assert len(placed) == 2 and all(len(p["pos"]) == 3 and len(p["quat"]) == 4 for p in placed)
    from nora_bench.video import read_frames

    frames = read_frames(str(out / rec["video"]))
    assert frames.shape == (7, 256, 256, 3)


def test_cli_rejects_bad_distractor_settings(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("name: s\nenv: libero\nbenchmark: libero_spatial\nnum_tasks: 10\nmax_steps: 9\n"
                   "distractor_names: [ketchup]\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, "-m", "nora_bench.cli", "run", str(bad), "--distractors", "3",
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2
    assert "--distractors 3 does not match suite s's 1 distractor_names" in res.stderr


# -- real LIBERO scenes ---------------------------------------------------------------------------------
def spec_for(**kw):
    from nora_bench.envs.libero_options import libero_spec_fields
    from nora_bench.episode import EpisodeSpec

    base = dict(suite="libero_spatial", benchmark="libero_spatial", task_id=0, trial=0, init_state=0, seed=11,
                max_steps=10, camera_size=128, cameras=("agentview",), state=True)
    base.update(kw)
    return EpisodeSpec(**libero_spec_fields(**base))


def joint_state(sim) -> dict[str, np.ndarray]:
    """qpos of every joint by name."""
    import mujoco

    m, d = sim.model._model, sim.data._data
    out = {}
    for j in range(m.njnt):
        n = {0: 7, 1: 4}.get(int(m.jnt_type[j]), 1)
        out[mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j)] = d.qpos[m.jnt_qposadr[j]:m.jnt_qposadr[j] + n].copy()
    return out


def settle(env, steps=10):
    r = None
    for _ in range(steps):
        r = env.step(env.dummy_action, render=True)
    return r


@pytest.fixture(scope="module")
def scenes():
    """The benchmark scene of libero_spatial task 0 trial 0, then the same with 2 distractors (one env,
    rebuilt: one LIBERO env per process)."""
    from nora_bench.envs.libero import LiberoEnv, init_states

    env = LiberoEnv()
    try:
        plain = {"obs": env.reset(spec_for()), "joints": joint_state(env.sim_env.sim)}
        plain["settled"] = settle(env).observation
        spec = spec_for(distractors=2)
        obs = env.reset(spec)
        yield {"env": env, "spec": spec, "plain": plain, "obs": obs, "joints": joint_state(env.sim_env.sim),
               "info": env.episode_info(), "init": init_states("libero_spatial", 0)[0]}
    finally:
        env.close()


def test_scene_has_the_distractors(scenes):
    env, info = scenes["env"], scenes["info"]
    placed = info["distractors"]
    assert len(placed) == 2
    cats = [p["category"] for p in placed]
    assert list(D.categories_for(scenes["spec"], {"instruction": env.info["instruction"],
                                                  "bddl": spatial_bddl()})) == cats
    sim = env.sim_env.sim
    for p in placed:
        assert p["name"] in env.sim_env.env.objects_dict
        assert sim.model.body_name2id(env.sim_env.env.objects_dict[p["name"]].root_body) >= 0
        # LIBERO observes them like any object, at the recorded pose.
        np.testing.assert_allclose(scenes["obs"].state[f"{p['name']}_pos"], p["pos"], atol=1e-4)
        assert len(p["quat"]) == 4 and abs(np.linalg.norm(p["quat"]) - 1) < 1e-4


def test_original_joints_hold_the_benchmark_init_state(scenes):
    plain, joints, init = scenes["plain"]["joints"], scenes["joints"], scenes["init"]
    names = set(joints) - set(plain)
    assert len(names) == 2 and all(n.startswith(tuple(p["name"] for p in scenes["info"]["distractors"])) for n in names)
    for name, q in plain.items():  # every original joint: equal to the benchmark scene's, by name
        np.testing.assert_array_equal(joints[name], q, err_msg=name)
    # ... and that is the benchmark init state itself (flat [time, qpos, qvel] of the original model).
    flat = np.concatenate(list(plain.values()))  # joint id order is qpos order
    np.testing.assert_array_equal(init[1:1 + len(flat)], flat)
    for obj in ("akita_black_bowl_1", "plate_1", "cookies_1"):
        np.testing.assert_allclose(scenes["obs"].state[f"{obj}_pos"], scenes["plain"]["obs"].state[f"{obj}_pos"],
                                   atol=1e-9)


def test_distractors_are_seen_and_disturb_nothing(scenes):
    env, info = scenes["env"], scenes["info"]
    img_plain, img = scenes["plain"]["obs"].images["agentview"], scenes["obs"].images["agentview"]
    diff = np.abs(img.astype(int) - img_plain.astype(int)).sum(-1) > 30
    assert diff.mean() > 0.002
    scene = env._distractors
    for p in info["distractors"]:
        r, c = np.round(scene.project(np.array(p["pos"]), size=128)[0]).astype(int)
        patch = diff[max(r - 4, 0):r + 5, max(c - 4, 0):c + 5]
        assert patch.mean() > 0.3, f"{p['name']} not visible where it stands ({r}, {c})"
    # Everything changed in the image lies near a distractor (nothing else moved).
    rows, cols = np.nonzero(diff)
    centres = scene.project(np.array([p["pos"] for p in info["distractors"]]), size=128)
    near = np.min(np.hypot(rows[:, None] - centres[None, :, 0], cols[:, None] - centres[None, :, 1]), axis=1)
    assert np.mean(near < 30) > 0.95
    # After the settle steps the task objects rest exactly where they do without distractors, and the
    # distractors stand on the table.
    settled = settle(env).observation
    for obj in ("akita_black_bowl_1", "akita_black_bowl_2", "plate_1", "cookies_1", "glazed_rim_porcelain_ramekin_1"):
        np.testing.assert_allclose(settled.state[f"{obj}_pos"], scenes["plain"]["settled"].state[f"{obj}_pos"],
                                   atol=1e-3, err_msg=obj)
    for p in info["distractors"]:
        pos = settled.state[f"{p['name']}_pos"]
        assert np.linalg.norm(pos[:2] - p["pos"][:2]) < 0.01 and 0.85 < pos[2] < p["pos"][2] + 0.01


def test_success_is_still_detected(scenes):
    env = scenes["env"]
    env.reset(scenes["spec"])
    assert not env.step(env.dummy_action).success
    # Put the bowl on the plate by hand: the simulator's own BDDL check must see the goal.
    sim = env.sim_env.sim
    inner = env.sim_env.env
    plate = sim.data.body_xpos[sim.model.body_name2id(inner.objects_dict["plate_1"].root_body)].copy()
    joint = inner.objects_dict["akita_black_bowl_1"].joints[-1]
    quat = sim.data.get_joint_qpos(joint)[3:]
    sim.data.set_joint_qpos(joint, np.concatenate([plate + [0, 0, 0.03], quat]))
    sim.data.set_joint_qvel(joint, np.zeros(6))
    sim.forward()
    assert any(env.step(env.dummy_action, render=False).success for _ in range(30))


def test_placements_are_deterministic_per_trial(scenes):
    env, spec = scenes["env"], scenes["spec"]
    env.reset(replace(spec, trial=1, init_state=1))
    other = env.episode_info()
    env.reset(spec)
    assert env.episode_info() == scenes["info"]
    assert other != scenes["info"]


def test_name_list_and_unplaceable_distractors(scenes, tmp_path, monkeypatch):
    env = scenes["env"]
    env.reset(spec_for(distractor_names=("ketchup", "butter"), trial=2, init_state=2))
    assert [p["category"] for p in env.episode_info()["distractors"]] == ["ketchup", "butter"]
    # A dozen objects overlap at the origin while LIBERO builds the model: MuJoCo's contact
    # warning goes to MUJOCO_LOG.TXT in the working directory, so keep it out of the checkout.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="cannot be placed: no free spot on the main_table"):
        env.reset(spec_for(distractors=12, cameras=()))


@pytest.mark.parametrize("benchmark, support", [("libero_object", "floor"), ("libero_10", "living_room_table")])
def test_other_scene_kinds(benchmark, support):
    """A floor scene and a living-room scene (whose table is a fixture) take distractors too."""
    from nora_bench.envs.libero import LiberoEnv

    env = LiberoEnv()
    try:
        spec = spec_for(suite=benchmark, benchmark=benchmark, distractors=2, cameras=())
        env.reset(spec)
        assert env._distractors.workspace == support
        placed = env.episode_info()["distractors"]
        assert len(placed) == 2
        settled = settle(env).observation.state
        for p in placed:  # they stand still where they were put: on free support, touching nothing
            assert np.linalg.norm(settled[f"{p['name']}_pos"] - p["pos"]) < 0.01, p
    finally:
        env.close()
