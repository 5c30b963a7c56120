"""Privileged LIBERO simulator state for policies that declare `state: true` (the scripted expert).

Everything is plain numpy / str / bool so that it pickles through Ray unchanged:

- `eef_pos`, `eef_quat` (xyzw), `gripper_qpos` (finger joints; about 0.04 open, 0.001 closed on nothing),
  `base_pos` (the robot's base: how far it can reach);
- `bodies`: every object and fixture by BDDL name (and the arena's table and walls by body name):
  `pos`, `quat` (wxyz, MuJoCo's order), `boxes` (n, 2, 3): world axis-aligned boxes of its collision
  geoms, `lo`/`hi` their union, `half_local` the half extents of its collision box in its own
  frame (at reset), and `fixture`;
- `joints`: every articulated fixture joint (drawers, doors, knobs): `qpos`, `type` (slide/hinge),
  world `axis` and `anchor`, `range`, the owning fixture `body`, and `boxes` (lo, hi pairs) of the
  collision geoms the joint moves (where a handle or knob is);
- `sites`: BDDL regions: `pos`, `mat` (3x3), `size` (half extents), `parent`, `joints`;
- `goal`: the BDDL goal as predicate lists (e.g. ['on', 'akita_black_bowl_1', 'plate_1']) and
  `goal_status`: each predicate's truth by the simulator's own check (the one `done` uses).

Read-only: nothing here changes the simulation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SLIDE, HINGE = 2, 3  # mujoco.mjtJoint values
_JOINT_TYPES = {SLIDE: "slide", HINGE: "hinge"}


class LiberoStateReader:
    """Built once per env (the model's static facts), then read at every observation."""

    def __init__(self, env) -> None:
        """`env` is LIBERO's OffScreenRenderEnv."""
        self.env = env.env
        sim = self.env.sim
        m = sim.model._model
        self._m, self._d = m, sim.data._data
        import mujoco

        name = lambda kind, i: mujoco.mj_id2name(m, kind, i) or ""  # noqa: E731
        roots = {}
        self.fixtures = set(self.env.fixtures_dict)
        for obj in list(self.env.objects_dict) + list(self.env.fixtures_dict):
            roots[int(m.body_rootid[self.env.obj_body_id[obj]])] = obj
        collide = (m.geom_contype != 0) | (m.geom_conaffinity != 0)
        geom_root = m.body_rootid[m.geom_bodyid]
        # The arena (table, walls) counts as fixtures under its body names; the robot does not.
        for rid in np.unique(geom_root[collide]):
            bname = name(mujoco.mjtObj.mjOBJ_BODY, int(rid))
            if int(rid) not in roots and rid != 0 and not bname.startswith(("robot", "gripper", "mount")):
                roots[int(rid)] = bname
                self.fixtures.add(bname)
        # Collision geoms per object (visual meshes do not block the hand).
        self._geoms = {obj: np.flatnonzero(collide & (geom_root == rid)) for rid, obj in roots.items()}
        self._body_ids = {obj: rid for rid, obj in roots.items()}
        for obj in self.env.objects_dict:
            self._body_ids[obj] = int(self.env.obj_body_id[obj])
        # Half extents of each object's collision geoms in its own frame (rigid, so computed once):
        # the corners of every geom's own bounding box, taken into the body's frame.
        self._half_local = {}
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        for obj, geoms in self._geoms.items():
            b = self._body_ids[obj]
            if len(geoms) == 0:
                self._half_local[obj] = np.zeros(3)
                continue
            pts = []
            for g in geoms:
                gmat = self._d.geom_xmat[g].reshape(3, 3)
                local = m.geom_aabb[g, :3] + signs * m.geom_aabb[g, 3:]
                pts.append(self._d.geom_xpos[g] + local @ gmat.T)
            rel = (np.concatenate(pts) - self._d.xpos[b]) @ self._d.xmat[b].reshape(3, 3)
            self._half_local[obj] = 0.5 * (rel.max(0) - rel.min(0))
        # Articulated fixture joints, and the collision geoms each one moves (its body's subtree).
        self._joints = {}
        for j in range(m.njnt):
            if m.jnt_type[j] not in _JOINT_TYPES:
                continue
            owner = roots.get(int(m.body_rootid[m.jnt_bodyid[j]]))
            if owner is None or owner not in self.fixtures:
                continue
            moving = {int(m.jnt_bodyid[j])}
            for b in range(m.nbody):  # bodies are ordered parents-first
                if int(m.body_parentid[b]) in moving:
                    moving.add(b)
            geoms = np.flatnonzero(collide & np.isin(m.geom_bodyid, list(moving)))
            self._joints[name(mujoco.mjtObj.mjOBJ_JOINT, j)] = (j, owner, geoms)
        self._base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "robot0_base")
        self.goal = [list(p) for p in self.env.parsed_problem["goal_state"]]
        self.sites = {}
        for site, obj in self.env.object_sites_dict.items():
            size = np.asarray(obj.size, dtype=float)
            self.sites[site] = {"size": size, "parent": obj.parent_name, "joints": list(obj.joints or [])}

    def _boxes(self, geoms: np.ndarray) -> np.ndarray:
        m, d = self._m, self._d
        mats = d.geom_xmat[geoms].reshape(-1, 3, 3)
        centre = d.geom_xpos[geoms] + np.einsum("gij,gj->gi", mats, m.geom_aabb[geoms, :3])
        half = np.einsum("gij,gj->gi", np.abs(mats), m.geom_aabb[geoms, 3:])
        return np.stack([centre - half, centre + half], axis=1)  # (n, 2, 3)

    def read(self, raw: dict) -> dict[str, Any]:
        """The privileged state now; `raw` is the env's observation dict (robot proprioception)."""
        m, d, env = self._m, self._d, self.env
        bodies = {}
        for obj, geoms in self._geoms.items():
            b = self._body_ids[obj]
            boxes = self._boxes(geoms)
            lo, hi = (boxes[:, 0].min(0), boxes[:, 1].max(0)) if len(boxes) else (d.xpos[b].copy(), d.xpos[b].copy())
            bodies[obj] = {"pos": d.xpos[b].copy(), "quat": d.xquat[b].copy(), "lo": lo, "hi": hi, "boxes": boxes,
                           "half_local": self._half_local[obj], "fixture": obj in self.fixtures}
        joints = {}
        for jn, (j, owner, geoms) in self._joints.items():
            joints[jn] = {"qpos": float(d.qpos[m.jnt_qposadr[j]]), "type": _JOINT_TYPES[int(m.jnt_type[j])],
                          "axis": d.xaxis[j].copy(), "anchor": d.xanchor[j].copy(),
                          "range": m.jnt_range[j].copy(), "body": owner, "boxes": self._boxes(geoms)}
        sites = {}
        for site, static in self.sites.items():
            sites[site] = {**static, "name": site, "pos": env.sim.data.get_site_xpos(site).copy(),
                           "mat": env.sim.data.get_site_xmat(site).copy()}
        return {
            "eef_pos": np.asarray(raw["robot0_eef_pos"], dtype=float).copy(),
            "eef_quat": np.asarray(raw["robot0_eef_quat"], dtype=float).copy(),
            "gripper_qpos": np.asarray(raw["robot0_gripper_qpos"], dtype=float).copy(),
            "base_pos": d.xpos[self._base].copy(),
            "bodies": bodies, "joints": joints, "sites": sites,
            "goal": [list(p) for p in self.goal],
            "goal_status": [bool(env._eval_predicate(p)) for p in self.goal],
        }


def read_state(env, raw: dict) -> dict[str, Any]:
    """The privileged state of LIBERO env `env` (an OffScreenRenderEnv); the reader is cached on it."""
    reader = getattr(env, "_nora_state_reader", None)
    # A hard reset (robosuite reloads the model) gives the env a new sim: read that one.
    if reader is None or reader.env is not env.env or reader._d is not env.env.sim.data._data:
        reader = LiberoStateReader(env)
        env._nora_state_reader = reader
    return reader.read(raw)
