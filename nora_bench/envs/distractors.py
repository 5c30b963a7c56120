"""Distractor objects for LIBERO scenes (the NORA paper's distractor ablation).

How a scene gets distractors:
1. `choose`: which objects. Either a given name list or a deterministic sample from the LIBERO
   object catalog (seeded by suite, task, trial and run seed). Categories the instruction names
   and categories already in the scene are never sampled, so the task stays unambiguous.
2. `rewrite_bddl`: the task's BDDL gets the new objects in `:objects`, so LIBERO builds them into
   the MuJoCo model (no region, no `:init` fact: LIBERO's sampler never moves them).
3. `DistractorScene.reset`: the benchmark init state no longer fits the enlarged model, so the
   original joints are copied in by joint name (REFERENCE.md section 5); then every distractor
   is placed on free support surface (table or floor), clear of the task's objects, fixtures and
   goal regions, at a pose drawn from the episode's seed. Free surface is checked twice: box
   overlap against every other body, and downward rays that must hit the bare support.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from nora_bench import UserError
from nora_bench.envs.libero_options import options_of

# LIBERO object modules whose objects are movable table-top items.
_CATALOG_MODULES = ("hope_objects", "google_scanned_objects", "turbosquid_objects", "self_designed_object")
# Furniture and containers too large to sit among the task objects as a distractor.
_TOO_LARGE = frozenset({
    "rack", "basket", "red_basket", "chefmate_8_frypan", "wooden_tray", "white_storage_box", "wooden_shelf",
    "wooden_two_layer_shelf", "wine_rack", "brown_rack", "wine_rack_stand", "dining_set_group", "bowl_drainer",
    "desk_caddy", "yellow_desk_caddy",
})
# Never drawn at random (a name list may still ask for them): about 0.2 m wide, they often find no
# free spot in the crowded libero_goal scene.
_NOT_SAMPLED = frozenset({"plate", "yellow_plate"})
CLEARANCE = 0.015  # m kept free around every distractor (the gripper needs room between objects)
GOAL_MARGIN = 0.04  # m kept free around goal regions and goal target objects
MAX_TRIES = 1000  # candidate poses per distractor before giving up
PAD = 0.2  # m: candidates come from the box around the BDDL regions grown by this (the rays keep them on the table)
VIEW_PX, VIEW_MARGIN = 256, 0.04  # distractors stand inside the agentview image, 4% from its border
SUPPORT_TOLERANCE = 0.005  # m: a ray must hit the support within this of its surface height


@lru_cache(maxsize=None)
def catalog() -> tuple[str, ...]:
    """Object categories usable as distractors: movable table-top items whose assets are installed."""
    from libero.libero.envs.objects import get_object_dict

    out = []
    for name, cls in sorted(get_object_dict().items()):
        if cls.__module__.rsplit(".", 1)[-1] not in _CATALOG_MODULES or name in _TOO_LARGE:
            continue
        try:
            cls(name=f"{name}_probe")  # parses the object's XML: fails when its asset files are missing
        except (OSError, ValueError):
            continue
        out.append(name)
    return tuple(out)


def check_names(names) -> None:
    """A clear error for names that are not distractor categories."""
    valid = catalog()
    bad = [n for n in names if n not in valid]
    if bad:
        raise UserError(f"unknown distractor object(s) {', '.join(map(repr, bad))}; valid names: {', '.join(valid)}")


def check_suite(suite, source: str) -> None:
    """A suite preset's distractor name list: known objects, consistent with its count."""
    check_names(suite.distractor_names)
    if suite.distractors not in (0, len(suite.distractor_names)):
        raise UserError(f"malformed suite {source}: distractors: {suite.distractors} does not match the "
                        f"{len(suite.distractor_names)} distractor_names; give one or the other")


# -- which objects -------------------------------------------------------------------------------
def _stem(word: str) -> str:
    """Crude singular so that 'cookie box' names the 'cookies' category."""
    word = word.lower()
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "ie"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-zA-Z]+", text)}


# Words of catalog names that say nothing about what an object is.
_NOT_NAMES = frozenset({"and", "of", "new", "bigger", "libero"})


def named_by(instruction: str, category: str) -> bool:
    """True if the instruction mentions any word of the category's name (e.g. 'bowl', 'black', 'soup').

    Deliberately broad: a red mug next to 'the red bowl' could already confuse a policy.
    """
    return bool((_words(category.replace("_", " ")) - _NOT_NAMES) & _words(instruction))


def seed_for(suite: str, task_id: int, trial: int, seed: int) -> int:
    return zlib.crc32(f"{suite}/{task_id}/{trial}/{seed}".encode())


def categories_for(spec, task: dict) -> tuple[str, ...]:
    """The distractor categories of an episode (`task`: name, instruction, bddl of its task)."""
    opts = options_of(spec)
    return _categories_cached(spec.suite, spec.task_id, spec.trial, spec.seed, opts.distractors,
                              opts.distractor_names, task["instruction"], task["bddl"])


@lru_cache(maxsize=256)
def _categories_cached(suite, task_id, trial, seed, count, names, instruction, bddl_path) -> tuple[str, ...]:
    bddl = Path(bddl_path).read_text()
    in_scene = {cat for _names, cat in scene_objects(bddl)}
    rng = np.random.default_rng([seed_for(suite, task_id, trial, seed), 0])
    return tuple(choose(count, names, instruction, in_scene, rng))


def placement_rng(spec) -> np.random.Generator:
    """The generator of an episode's distractor poses: a function of (suite, task, trial, seed) only."""
    return np.random.default_rng([seed_for(spec.suite, spec.task_id, spec.trial, spec.seed), 1])


def choose(count: int, names: tuple[str, ...], instruction: str, scene_categories: set[str],
           rng: np.random.Generator) -> list[str]:
    """The distractor categories of one episode: `names` if given (checked), else `count` sampled."""
    if names:
        check_names(names)
        if count and count != len(names):
            raise UserError(f"--distractors {count} does not match the {len(names)} distractor names "
                            f"({', '.join(names)}): give one or the other")
        named = [n for n in names if named_by(instruction, n)]
        if named:
            raise UserError(f"distractor(s) {', '.join(named)} share a name with the instruction "
                            f"{instruction!r}, which would make the task ambiguous: choose other objects")
        return list(names)
    pool = [c for c in catalog()
            if c not in scene_categories and c not in _NOT_SAMPLED and not named_by(instruction, c)]
    if count > len(pool):
        raise UserError(f"{count} distractors requested but only {len(pool)} catalog objects fit this task "
                        f"({instruction!r}): use at most {len(pool)}")
    return [pool[i] for i in sorted(rng.choice(len(pool), size=count, replace=False))]


# -- BDDL rewriting ------------------------------------------------------------------------------
def _block(text: str, head: str) -> tuple[int, int]:
    """(start, end) of the parenthesised block starting with `(head`; end is after its ')'."""
    start = text.find(f"({head}")
    if start < 0:
        raise ValueError(f"BDDL has no {head} block")
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return start, i + 1
    raise ValueError(f"unbalanced parentheses in the BDDL {head} block")


def _parse_typed(body: str) -> list[tuple[list[str], str]]:
    """`a b - cat  c - cat2` -> [([a, b], cat), ([c], cat2)]."""
    tokens, out, names = body.split(), [], []
    i = 0
    while i < len(tokens):
        if tokens[i] == "-":
            out.append((names, tokens[i + 1]))
            names, i = [], i + 2
        else:
            names.append(tokens[i])
            i += 1
    return out


def scene_objects(bddl: str) -> list[tuple[list[str], str]]:
    s, e = _block(bddl, ":objects")
    return _parse_typed(bddl[s + len("(:objects"):e - 1])


def workspace_of(bddl: str) -> str:
    """The fixture the task's objects stand on (main_table, floor, kitchen_table, ...)."""
    s, e = _block(bddl, ":regions")
    # Regions on a workspace have ranges; a cabinet's drawer regions have none.
    targets = re.findall(r"\(:target\s+(\S+?)\)\s*\(:ranges", bddl[s:e])
    s, e = _block(bddl, ":fixtures")
    fixtures = {n for names, _cat in _parse_typed(bddl[s + len("(:fixtures"):e - 1]) for n in names}
    supports = [t for t in targets if t in fixtures]
    if not supports:
        raise ValueError("cannot tell which fixture the task's objects stand on")
    return max(set(supports), key=supports.count)


def work_area(bddl: str, workspace: str) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of the workspace regions, relative to the workspace."""
    boxes = []
    for m in re.finditer(r"\(:target\s+" + re.escape(workspace) + r"\)\s*\(:ranges\s*\(\s*\(([^)]*)\)", bddl):
        boxes.append([float(v) for v in m.group(1).split()])
    b = np.array(boxes)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def rewrite_bddl(bddl: str, categories: list[str]) -> tuple[str, list[str]]:
    """The task's BDDL with the distractors added. Returns (text, instance names)."""
    objects = scene_objects(bddl)
    taken = {n for names, _ in objects for n in names}
    instances = []
    for cat in categories:
        k = 1
        while f"{cat}_{k}" in taken:
            k += 1
        taken.add(f"{cat}_{k}")
        instances.append(f"{cat}_{k}")
        for names, c in objects:
            if c == cat:  # one line per category: the parser keeps only the last line of a category
                names.append(f"{cat}_{k}")
                break
        else:
            objects.append(([f"{cat}_{k}"], cat))
    obj_lines = "".join(f"\n    {' '.join(names)} - {cat}" for names, cat in objects)

    # No region and no :init fact: LIBERO's own sampler, which places the benchmark objects, never
    # sees the distractors (it can fail in crowded scenes, and it draws from the global numpy RNG).
    # DistractorScene.reset poses them before any physics step runs.
    s, e = _block(bddl, ":objects")
    bddl = bddl[:s] + "(:objects" + obj_lines + "\n  )" + bddl[e:]
    return bddl, instances


def write_bddl(bddl_path: str, categories: list[str], folder: Path) -> tuple[str, list[str]]:
    """Write the rewritten BDDL into `folder` (LIBERO reads a file). Returns (path, instances)."""
    text, instances = rewrite_bddl(Path(bddl_path).read_text(), categories)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(bddl_path).stem[:80]}__{zlib.crc32(text.encode()):08x}.bddl"
    path.write_text(text)
    return str(path), instances


# -- the enlarged scene at reset -----------------------------------------------------------------
@dataclass
class Placed:
    name: str
    category: str
    pos: list[float]
    quat: list[float]  # wxyz, MuJoCo order

    def to_dict(self) -> dict:
        return {"name": self.name, "category": self.category,
                "pos": [round(v, 5) for v in self.pos], "quat": [round(v, 5) for v in self.quat]}


def _box_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class DistractorScene:
    """State copying and placement for one built LIBERO env with distractors."""

    def __init__(self, env, instances: list[str], categories: list[str], bddl_text: str):
        import mujoco

        self._mj = mujoco
        self.env = env  # OffScreenRenderEnv
        self.instances, self.categories = instances, categories
        inner = env.env
        sim = inner.sim
        self.model, self.data = sim.model._model, sim.data._data
        m = self.model
        self.workspace = workspace_of(bddl_text)
        self.offset = np.asarray(inner.workspace_offset, dtype=float)
        self.area = np.array(work_area(bddl_text, self.workspace)) + np.tile(self.offset[:2], 2)

        # Joints: the distractors' free joints vs the original model's. MuJoCo lays out qpos in
        # body-tree order and every distractor is a whole subtree of the world body, so the
        # original joints keep their names and relative order: the original layout is this one
        # minus the distractor joints (full_state checks the size; tests/test_distractors.py
        # checks every joint by name against the benchmark scene).
        self.free_joint = {}
        for inst in instances:
            jname = inner.objects_dict[inst].joints[-1]
            self.free_joint[inst] = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, jname)
        skip = set(self.free_joint.values())
        sizes = {int(mujoco.mjtJoint.mjJNT_FREE): (7, 6), int(mujoco.mjtJoint.mjJNT_BALL): (4, 3)}
        qmap, vmap, q_orig, v_orig = [], [], 0, 0
        for j in range(m.njnt):
            nq, nv = sizes.get(int(m.jnt_type[j]), (1, 1))
            if j not in skip:
                qmap += [(int(m.jnt_qposadr[j]) + i, q_orig + i) for i in range(nq)]
                vmap += [(int(m.jnt_dofadr[j]) + i, v_orig + i) for i in range(nv)]
                q_orig += nq
                v_orig += nv
        self.q_new, self.q_old = (np.array(v, dtype=int) for v in zip(*qmap))
        self.v_new, self.v_old = (np.array(v, dtype=int) for v in zip(*vmap))
        self.nq_orig, self.nv_orig = q_orig, v_orig

        # Bodies: the support (table / floor), the robot, distractor subtrees, everything else.
        self.body_of = {inst: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, inner.objects_dict[inst].root_body)
                        for inst in instances}
        dis_bodies = set()
        for b in range(m.nbody):
            root = b
            while root and root not in self.body_of.values():
                root = int(m.body_parentid[root])
            if root:
                dis_bodies.add(b)
        self.distractor_bodies = dis_bodies
        self.fixture_names = set(inner.fixtures_dict)
        self.last: list[Placed] = []

    # -- state ---------------------------------------------------------------------------------
    def full_state(self, init_state: np.ndarray) -> np.ndarray:
        """The enlarged model's flat state [time, qpos, qvel] holding `init_state`'s joints."""
        init_state = np.asarray(init_state, dtype=float)
        if len(init_state) != 1 + self.nq_orig + self.nv_orig:
            raise ValueError(f"init state has {len(init_state)} values, the original model needs "
                             f"{1 + self.nq_orig + self.nv_orig}: the distractor scene no longer matches its task")
        m = self.model
        state = np.concatenate([[init_state[0]], self.data.qpos.copy(), np.zeros(m.nv)])
        state[1 + self.q_new] = init_state[1 + self.q_old]
        state[1 + m.nq + self.v_new] = init_state[1 + self.nq_orig + self.v_old]
        return state

    def reset(self, init_state: np.ndarray, rng: np.random.Generator) -> dict:
        """Write the init state and place the distractors; returns LIBERO's observation dict."""
        mj, m, d = self._mj, self.model, self.data
        state = self.full_state(init_state)
        d.time = state[0]
        d.qpos[:] = state[1:1 + m.nq]
        d.qvel[:] = state[1 + m.nq:]
        # Park the distractors far away while measuring the scene.
        for k, inst in enumerate(self.instances):
            adr = m.jnt_qposadr[self.free_joint[inst]]
            d.qpos[adr:adr + 3] = [50.0 + 2 * k, 50.0, 1.0]
        mj.mj_forward(m, d)
        support_body, support_z = self._support()
        self._view = self._camera()
        occupied = self._occupied_boxes(self._root_of(support_body) if support_body else -1, support_z)
        placed = []
        for inst, cat in zip(self.instances, self.categories):
            placed.append(self._place(inst, cat, occupied, support_body, support_z, rng))
        mj.mj_forward(m, d)
        self.last = placed
        state = np.concatenate([[d.time], d.qpos.copy(), d.qvel.copy()])
        return self.env.regenerate_obs_from_state(state)

    def info(self) -> dict:
        return {"distractors": [p.to_dict() for p in self.last]}

    # -- geometry ------------------------------------------------------------------------------
    def _geom_boxes(self, bodies) -> np.ndarray:
        """World-frame xy boxes (x0, y0, x1, y1) of the collision geoms of `bodies`."""
        m, d = self.model, self.data
        out = []
        for g in range(m.ngeom):
            if int(m.geom_bodyid[g]) not in bodies or (m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0):
                continue
            center, half = m.geom_aabb[g, :3], m.geom_aabb[g, 3:]
            rot = d.geom_xmat[g].reshape(3, 3)
            c = d.geom_xpos[g] + rot @ center
            h = np.abs(rot) @ half
            out.append([c[0] - h[0], c[1] - h[1], c[0] + h[0], c[1] + h[1], c[2] - h[2], c[2] + h[2]])
        return np.array(out).reshape(-1, 6)

    def _group_of(self, obj_name: str) -> set[int]:
        """Body ids of an object's subtree (a task object or a fixture)."""
        inner = self.env.env
        obj = inner.objects_dict.get(obj_name) or inner.fixtures_dict.get(obj_name)
        if obj is None:
            return set()
        root = self._mj.mj_name2id(self.model, self._mj.mjtObj.mjOBJ_BODY, obj.root_body)
        return {b for b in range(self.model.nbody) if root >= 0 and self._root_of(b) == root}

    def _occupied_boxes(self, skip_root: int, support_z: float) -> list[np.ndarray]:
        """Boxes nothing may overlap: every body but the support, goal regions, goal targets (with margins).

        Geoms entirely below the support surface (the room's floor under a table) occupy nothing."""
        inner = self.env.env
        m = self.model
        boxes = []
        # The robot hovers over the table: the rays below catch what is right under it.
        robot_roots = {self._root_of(self._mj.mj_name2id(m, self._mj.mjtObj.mjOBJ_BODY, r.robot_model.root_body))
                       for r in inner.robots}
        roots = {self._root_of(b) for b in range(1, m.nbody)} - {skip_root} - robot_roots
        for root in roots:
            bodies = {b for b in range(1, m.nbody) if self._root_of(b) == root}
            if bodies & self.distractor_bodies:
                continue
            boxes += [b[:4] for b in self._geom_boxes(bodies) if b[5] > support_z + 0.001]
        goal = inner.parsed_problem["goal_state"]
        regions = inner.parsed_problem["regions"]
        o = self.offset
        for fact in goal:
            for arg in fact[1:]:
                # A goal target object (the plate of "on the plate"): keep room around it.
                gb = self._geom_boxes(self._group_of(arg))
                if len(gb) and arg not in self.fixture_names:
                    boxes.append(np.array([gb[:, 0].min() - GOAL_MARGIN, gb[:, 1].min() - GOAL_MARGIN,
                                           gb[:, 2].max() + GOAL_MARGIN, gb[:, 3].max() + GOAL_MARGIN]))
                # A goal region on the workspace: where the task wants something put.
                r = regions.get(arg)
                if r and r["target"] == self.workspace and r["ranges"]:
                    x0, y0, x1, y1 = r["ranges"][0]
                    boxes.append(np.array([x0 + o[0] - GOAL_MARGIN, y0 + o[1] - GOAL_MARGIN,
                                           x1 + o[0] + GOAL_MARGIN, y1 + o[1] + GOAL_MARGIN]))
        # Fixtures are re-sampled within their BDDL region at every reset: block their whole range,
        # so that placements do not depend on where this reset happened to put them.
        init_regions = {f[1]: f[2] for f in inner.parsed_problem["initial_state"] if f[0] == "on" and len(f) == 3}
        for fx in self.fixture_names:
            r = regions.get(init_regions.get(fx, ""))
            group = self._group_of(fx)
            if skip_root in group:  # the support itself (a living-room table is a fixture)
                continue
            gb = self._geom_boxes(group)
            if not r or not r["ranges"] or not len(gb):
                continue
            x0, y0, x1, y1 = r["ranges"][0]
            dx, dy = x1 - x0, y1 - y0
            boxes.append(np.array([gb[:, 0].min() - dx, gb[:, 1].min() - dy, gb[:, 2].max() + dx, gb[:, 3].max() + dy]))
        return boxes

    def _ray(self, x: float, y: float) -> tuple[int, float]:
        """(body id, height) of the first collision geom below (x, y), or (-1, nan)."""
        mj = self._mj
        geomid = np.array([-1], dtype=np.int32)
        # Collision (group 0) and visual (group 1) geoms: mj_ray skips invisible geoms, and some
        # arenas' collision floors are invisible.
        groups = np.array([1, 1, 0, 0, 0, 0], dtype=np.uint8)
        top = 3.0
        dist = mj.mj_ray(self.model, self.data, np.array([x, y, top]), np.array([0.0, 0.0, -1.0]),
                         groups, 1, -1, geomid)
        if geomid[0] < 0:
            return -1, float("nan")
        return int(self.model.geom_bodyid[geomid[0]]), top - dist

    def _support(self) -> tuple[int, float]:
        """The body and height the task's objects stand on: the most common hit below the work area."""
        xs = np.linspace(self.area[0], self.area[2], 7)
        ys = np.linspace(self.area[1], self.area[3], 7)
        hits = [self._ray(x, y) for x in xs for y in ys]
        hits = [h for h in hits if h[0] >= 0]
        heights = np.array([h[1] for h in hits])
        floor_level = heights.min()
        # The support is the lowest surface under the work area (objects stand on it).
        low = [h for h in hits if h[1] < floor_level + 0.01]
        bodies = [h[0] for h in low]
        body = max(set(bodies), key=bodies.count)
        return body, float(np.median([h[1] for h in low if h[0] == body]))

    def _place(self, inst, cat, occupied, support_body, support_z, rng) -> Placed:
        mj, m, d = self._mj, self.model, self.data
        adr = int(m.jnt_qposadr[self.free_joint[inst]])
        base_q = self._base_quat(inst)
        bodies = {b for b in self.distractor_bodies if self._root_of(b) == self.body_of[inst]}
        x0, y0, x1, y1 = self.area
        pad = PAD
        for _ in range(MAX_TRIES):
            yaw = rng.uniform(0, 2 * np.pi)
            q = np.zeros(4)
            mj.mju_mulQuat(q, np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]), base_q)
            x, y = rng.uniform(x0 - pad, x1 + pad), rng.uniform(y0 - pad, y1 + pad)
            d.qpos[adr:adr + 3] = [x, y, support_z + 0.5]
            d.qpos[adr + 3:adr + 7] = q
            mj.mj_kinematics(m, d)
            gb = self._geom_boxes(bodies)
            fx0, fy0, fx1, fy1 = gb[:, 0].min(), gb[:, 1].min(), gb[:, 2].max(), gb[:, 3].max()
            foot = np.array([fx0 - CLEARANCE, fy0 - CLEARANCE, fx1 + CLEARANCE, fy1 + CLEARANCE])
            if any(_box_overlap(foot, b) for b in occupied):
                continue
            if not self._in_view(foot, support_z):
                continue
            # The whole footprint must stand on bare support (on the table, not over its edge).
            ok = True
            for px in np.linspace(foot[0], foot[2], 4):
                for py in np.linspace(foot[1], foot[3], 4):
                    body, h = self._ray(px, py)
                    if body in bodies:
                        continue
                    if body != support_body or abs(h - support_z) > SUPPORT_TOLERANCE:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                continue
            # Rest the lowest point 5 mm above the surface; the settle steps let it drop.
            d.qpos[adr + 2] += support_z + 0.005 - gb[:, 4].min()
            mj.mj_kinematics(m, d)
            if not self._unoccluded(bodies):
                continue
            adr_v = int(m.jnt_dofadr[self.free_joint[inst]])
            d.qvel[adr_v:adr_v + 6] = 0
            mj.mj_kinematics(m, d)
            occupied.append(foot)
            return Placed(inst, cat, [float(v) for v in d.qpos[adr:adr + 3]], [float(v) for v in q])
        raise UserError(f"distractor {inst} ({cat}) cannot be placed: no free spot on the "
                        f"{self.workspace} clear of the task's objects after {MAX_TRIES} tries; use fewer distractors")

    def _camera(self):
        """The agentview camera's id, or None."""
        cam = self._mj.mj_name2id(self.model, self._mj.mjtObj.mjOBJ_CAMERA, "agentview")
        return None if cam < 0 else cam

    def project(self, points: np.ndarray, size: int = VIEW_PX) -> np.ndarray:
        """(row, col) of world points in a size x size agentview observation image (rotated 180 degrees
        as LiberoEnv delivers it: rows top-down as seen, columns mirrored)."""
        cam = self._camera()
        pos, rot = self.data.cam_xpos[cam], self.data.cam_xmat[cam].reshape(3, 3)
        f = 0.5 * size / np.tan(np.deg2rad(self.model.cam_fovy[cam]) / 2)
        pc = (np.atleast_2d(points) - pos) @ rot  # camera frame: x right, y up, looking along -z
        row = size / 2 - f * pc[:, 1] / -pc[:, 2]
        col = size / 2 + f * pc[:, 0] / -pc[:, 2]
        return np.stack([row, size - 1 - col], axis=1)

    def _unoccluded(self, bodies: set[int]) -> bool:
        """Whether the agentview camera sees the object (no cabinet or shelf in front of it)."""
        cam = self._view
        if cam is None:
            return True
        gb = self._geom_boxes(bodies)
        target = np.array([(gb[:, 0].min() + gb[:, 2].max()) / 2, (gb[:, 1].min() + gb[:, 3].max()) / 2,
                           gb[:, 4].min() + 0.6 * (gb[:, 5].max() - gb[:, 4].min())])
        origin = self.data.cam_xpos[cam].copy()
        geomid = np.array([-1], dtype=np.int32)
        groups = np.array([1, 1, 0, 0, 0, 0], dtype=np.uint8)  # collision and visual geoms
        self._mj.mj_ray(self.model, self.data, origin, target - origin, groups, 1, -1, geomid)
        return geomid[0] >= 0 and int(self.model.geom_bodyid[geomid[0]]) in bodies

    def _in_view(self, foot, z: float) -> bool:
        """Whether the footprint lies inside the agentview image (the policy and the video see it)."""
        if self._view is None:
            return True
        corners = np.array([[x, y, z] for x in foot[[0, 2]] for y in foot[[1, 3]]])
        px = self.project(corners)
        lo, hi = VIEW_MARGIN * VIEW_PX, (1 - VIEW_MARGIN) * VIEW_PX
        return bool(np.all((px >= lo) & (px <= hi)))

    def _root_of(self, b: int) -> int:
        m = self.model
        while int(m.body_parentid[b]) != 0:
            b = int(m.body_parentid[b])
        return b

    def _base_quat(self, inst: str) -> np.ndarray:
        """The orientation LIBERO's own sampler gives this object, with any angle range at its midpoint."""
        inner = self.env.env
        from libero.libero.envs.regions import get_region_samplers

        obj = inner.objects_dict[inst]
        problem = inner.parsed_problem
        ws_category = next(cat for cat, names in problem["fixtures"].items() if self.workspace in names)
        rot = obj.rotation
        if rot is None:
            rot = (0.0, 0.0)
        elif isinstance(rot, dict):
            rot = {ax: (float(np.mean(r)),) * 2 for ax, r in rot.items()}
        elif isinstance(rot, (tuple, list)):
            rot = (float(np.mean(rot)),) * 2
        # The sampler class LIBERO uses for objects on this workspace, asked for its quaternion only.
        sampler = get_region_samplers(problem["problem_name"], ws_category)(
            inst, obj, x_ranges=[[0, 0]], y_ranges=[[0, 0]], rotation=rot, rotation_axis=obj.rotation_axis)
        saved_rng = np.random.get_state()
        try:
            q = np.asarray(sampler._sample_quat(), dtype=float)
            if hasattr(obj, "init_quat"):
                from robosuite.utils.transform_utils import quat_multiply

                q = quat_multiply(q, obj.init_quat)
        finally:
            np.random.set_state(saved_rng)
        return q / np.linalg.norm(q)
