"""Skills of the scripted LIBERO expert: motions written as generators over simulator state.

A skill is a generator that yields one 7-D action at a time and reads the newest state from
`Planner.s` when resumed. Positions are world metres; the OSC_POSE controller maps an action of
1 to 5 cm / 0.5 rad of goal displacement, so `(target - pos) * 20` asks for the target itself.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from scipy.spatial.transform import Rotation

OPEN, CLOSE = -1.0, 1.0
POS_GAIN = 20.0  # 1 / 0.05 m: an action of err*20 puts the controller's goal on the target
ROT_GAIN = 2.0  # 1 / 0.5 rad
DOWN = np.diag([1.0, -1.0, -1.0])  # top-down hand, fingers closing along world y
GRIPPER_MAX = 0.075  # widest object the fingers take (m)
CLEAR = 0.03  # clearance above obstacles while carrying (m)
PALM_HALF = (0.10, 0.04)  # half extents of the hand across / along the fingers' closing axis (m)
# To put something in a drawer, open it only this far (m): a fully open top drawer overhangs the
# table where the object to pick often stands, and blocks the hand's way down to it.
DRAWER_PUT_OPEN = 0.09
DRAWER_PUT_FRONT = 0.6  # how far toward its front (0 centre, 1 against it) a load goes into a drawer that shuts after
STALL_STEPS = 8  # a move that has not advanced 2 mm in this many steps is over
LEAN_FROM = 0.72  # beyond this horizontal distance from the robot's base the hand leans outward (m)
PALM_ABOVE = 0.045  # the palm's underside above the fingertip point (m)
INSERT_TILT = 0.5  # fingers this far below level (rad) when carrying a mug into a box by its handle
DOOR_WIDE = 1.75  # open a door this far (rad) before carrying something in
RIM_PRECLOSE_STEPS = 3  # close steps from wide open that leave the fingers about 5 cm apart
RIM_HALF_GAP = 0.028  # each finger's distance from the grasp point when half open (m)
HANDLE_FROM = 0.045  # parts this far out from a body's axis are its handle (m)
HOLD_MIN_QPOS = 0.0012  # finger joint above this when closed: something is between the fingers (a bowl rim gives ~0.002)

Action = np.ndarray


def down_rot(yaw: float, tilt: float = 0.0) -> np.ndarray:
    """Top-down hand turned by `yaw` about z, tilted by `tilt` about world x (fingers toward -y for tilt<0)."""
    return Rotation.from_euler("x", tilt).as_matrix() @ Rotation.from_euler("z", yaw).as_matrix() @ DOWN


def closing_axis(rot: np.ndarray) -> np.ndarray:
    return rot[:, 1]


class Unsupported(Exception):
    """A goal the expert has no skill for; the episode stops with this reason."""


class Planner:
    """Turns the goal of one episode into a sequence of skills and runs them step by step."""

    def __init__(self, seed: int, max_grasp_attempts: int = 3):
        self.rng = np.random.default_rng(seed)
        self.max_grasp_attempts = max_grasp_attempts
        self.s: dict = {}
        self._gen: Iterator[Action] | None = None
        self.log: list[str] = []

    # -- entry point --------------------------------------------------------------------------
    def step(self, state: dict) -> tuple[Action, str | None]:
        self.s = state
        if self._gen is None:
            self._gen = self._main()
        try:
            action = next(self._gen)
        except Unsupported as e:
            return np.zeros(7), f"unsupported: {e}"
        except StopIteration:
            return self.hold(OPEN), None
        return np.asarray(action, dtype=float), None

    def _main(self) -> Iterator[Action]:
        goal = self.s["goal"]
        skills = [self._skill_for(p) for p in goal]  # raises Unsupported before any motion
        order = sorted(range(len(goal)), key=lambda i: _ORDER[goal[i][0]])
        for _round in range(2):
            for i in order:
                # A skill that failed (a dropped object, a slipped handle) gets another go at once,
                # before the next one can spoil its chances (a door swung shut on a dropped mug).
                for _try in range(2):
                    if not self.s["goal_status"][i]:  # the simulator's own check of this predicate
                        yield from skills[i]()
            if all(self.s["goal_status"]):
                break
        while True:  # all done (the env ends the episode on success) or out of ideas: wait
            yield from self.retreat()
            yield self.hold(OPEN)

    def _skill_for(self, pred: list[str]):
        kind = pred[0]
        if kind in ("on", "in") and len(pred) == 3:
            obj, target = pred[1], pred[2]
            if obj not in self.s["bodies"] or self.s["bodies"][obj]["fixture"]:
                raise Unsupported(f"{kind}({obj}, {target}): {obj} is not a movable object")
            if "plate" in obj and not self.grasp_candidates(obj):
                # A plate is carried by its rim like a bowl (quick, and over what stands in the
                # way); one whose rim gives no grasp is pushed across the table instead.
                if target in self.s["sites"] and self.s["sites"][target]["parent"] is None:
                    return lambda: self.push_to(obj, target)
            if kind == "in" and self._door_of(target):
                if self._handle_out(obj, target) is None:
                    raise Unsupported(f"in({obj}, {target}): only a mug whose handle faces the box's opening goes in")
                return lambda: self.insert(obj, target)
            if not self.grasp_candidates(obj):
                raise Unsupported(f"{kind}({obj}, {target}): no grasp of {obj} fits the gripper")
            return lambda: self.pick_place(obj, target, kind)
        if kind == "open" and self._slide_joint(pred[1]):
            return lambda: self.slide(pred[1], opening=True)
        if kind == "close" and self._slide_joint(pred[1]):
            return lambda: self.slide(pred[1], opening=False)
        if kind == "close" and self._door_joint(pred[1]):
            return lambda: self.swing_shut(pred[1])
        if kind == "turnon" and self._hinge_joint(pred[1]):
            return lambda: self.turn_knob(pred[1])
        raise Unsupported(f"no skill for goal predicate {' '.join(pred)}")

    # -- state helpers ------------------------------------------------------------------------
    @property
    def eef(self) -> np.ndarray:
        return self.s["eef_pos"]

    def rot(self) -> np.ndarray:
        return Rotation.from_quat(self.s["eef_quat"]).as_matrix()

    def body(self, name: str) -> dict:
        return self.s["bodies"][name]

    def finger(self) -> float:
        return float(abs(self.s["gripper_qpos"][0]))

    def _slide_joint(self, region: str) -> str | None:
        site = self.s["sites"].get(region)
        names = site["joints"] if site else []
        names = [j for j in names if j in self.s["joints"] and self.s["joints"][j]["type"] == "slide"]
        return names[0] if names else None

    def _hinge_joint(self, fixture: str) -> str | None:
        names = [j for j, v in self.s["joints"].items() if v["body"] == fixture and v["type"] == "hinge"]
        return names[0] if names else None

    def _door_joint(self, fixture: str) -> str | None:
        """A hinge about a vertical axis that closes at 0 (a microwave or cabinet door, not a knob)."""
        for j, v in self.s["joints"].items():
            if v["body"] == fixture and v["type"] == "hinge" and abs(v["axis"][2]) > 0.9 and 0.0 in v["range"]:
                if np.ptp(v["boxes"][:, :, :2].reshape(-1, 2), axis=0).max() > 0.15:  # a door is wide; a knob is not
                    return j
        return None

    def _door_of(self, region: str) -> str | None:
        site = self.s["sites"].get(region)
        parent = site["parent"] if site else None
        return self._door_joint(parent) if parent in self.s["bodies"] else None

    def door_frame(self, joint: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(r0, m0, length): the door leaf's direction from the hinge when shut, the direction its
        free edge moves as it shuts, and its length (xy unit vectors)."""
        j = self.s["joints"][joint]
        anchor = np.asarray(j["anchor"])[:2]
        centres = j["boxes"].mean(1)[:, :2]
        far = j["boxes"][:, :, :2].reshape(-1, 2)
        r = centres[int(np.argmax(np.linalg.norm(centres - anchor, axis=1)))] - anchor
        r /= np.linalg.norm(r)
        sense = float(np.sign(j["axis"][2]))  # a positive qpos turns the leaf about +z (or -z)
        r0 = _rot2(-sense * j["qpos"]) @ r
        shut = -float(np.sign(j["qpos"])) * sense or 1.0  # turning toward qpos 0
        m0 = shut * np.array([-r0[1], r0[0]])
        return r0, m0, float(np.linalg.norm(far - anchor, axis=1).max())

    def boxes(self, exclude: tuple[str, ...] = ()) -> np.ndarray:
        """World boxes (n, 2, 3) of every body but `exclude`; joints' moving parts as their own boxes."""
        out = []
        for name, b in self.s["bodies"].items():
            if name in exclude:
                continue
            out.append(b["boxes"])
        return np.concatenate(out) if out else np.zeros((0, 2, 3))

    # -- primitive motions --------------------------------------------------------------------
    def action_to(self, target: np.ndarray, rot: np.ndarray, grip: float) -> Action:
        dp = np.clip((target - self.eef) * POS_GAIN, -1, 1)
        err = Rotation.from_matrix(rot @ self.rot().T).as_rotvec()
        dr = np.clip(err * ROT_GAIN, -1, 1)
        return np.concatenate([dp, dr, [grip]])

    def nearest(self, rot: np.ndarray) -> np.ndarray:
        """`rot` or the same grip turned half a turn about the fingers (a parallel gripper is
        symmetric), whichever is closer to the hand now: no needless half-turns of the wrist."""
        flipped = rot @ np.diag([-1.0, -1.0, 1.0])
        now = self.rot()
        angle = lambda r: Rotation.from_matrix(r @ now.T).magnitude()  # noqa: E731
        return flipped if angle(flipped) < angle(rot) else rot

    def hold(self, grip: float) -> Action:
        return np.array([0, 0, 0, 0, 0, 0, grip], dtype=float)

    def move(self, target, rot, grip, tol=0.008, rot_tol=0.08, max_steps=80, speed=1.0, guard=None) -> Iterator[Action]:
        """Go to `target` with orientation `rot`; stops when within tolerance, after max_steps, or
        as soon as `guard()` turns false (e.g. the carried object fell)."""
        target = np.asarray(target, dtype=float)
        rot = self.nearest(rot)
        trail: list[np.ndarray] = []
        for _ in range(max_steps):
            if guard is not None and not guard():
                return
            err = Rotation.from_matrix(rot @ self.rot().T).magnitude()
            if np.linalg.norm(target - self.eef) < tol and err < rot_tol:
                return
            trail.append(self.eef.copy())
            if len(trail) > STALL_STEPS and np.linalg.norm(trail[-1] - trail[-1 - STALL_STEPS]) < 0.002 and err < rot_tol:
                return  # blocked (or as close as the arm gets): waiting longer only burns steps
            a = self.action_to(target, rot, grip)
            a[:3] = np.clip(a[:3], -speed, speed)
            yield a

    def grip(self, grip: float, rot, steps: int = 12) -> Iterator[Action]:
        here = self.eef.copy()
        rot = self.nearest(rot)
        for _ in range(steps):
            yield self.action_to(here, rot, grip)

    def path(self, target, rot, grip, carried: str | None = None, exclude: tuple[str, ...] = (), guard=None) -> Iterator[Action]:
        """Up to a height where hand and load clear every obstacle between here and `target`,
        across, then down (the waypoints that keep a straight line off the fixtures)."""
        start = self.eef.copy()
        target = np.asarray(target, dtype=float)
        skip = exclude + ((carried,) if carried else ())
        boxes = self.boxes(skip)
        a, b = start[:2], target[:2]
        # The palm: wide along the closing axis, from about 4.5 cm above the fingertips.
        u, v = closing_axis(rot), rot[:, 0]
        palm = np.abs(u[:2]) * PALM_HALF[0] + np.abs(v[:2]) * PALM_HALF[1]
        z = corridor_top(boxes, a, b, palm) - PALM_ABOVE + CLEAR
        if carried:
            body = self.body(carried)
            below = max(0.0, self.eef[2] - body["lo"][2])
            load = 0.5 * (body["hi"][:2] - body["lo"][:2]) + 0.01
            z = max(z, corridor_top(boxes, a, b, load) + below + CLEAR)
        else:
            z = max(z, corridor_top(boxes, a, b, np.array([0.03, 0.03])) + 0.05)
        z = min(max(start[2], target[2], z), 1.40)
        speed = 0.5 if carried else 1.0  # a fast swing tilts a rim-held load
        if z - start[2] > 0.01:
            yield from self.move([start[0], start[1], z], rot, grip, tol=0.02, speed=speed, guard=guard)
        yield from self.move([target[0], target[1], z], rot, grip, tol=0.015, speed=speed, guard=guard)
        yield from self.move(target, rot, grip, speed=speed, guard=guard)

    def home(self) -> Iterator[Action]:
        """Back toward the robot, hand turned top-down again: the arm straightens its wrist close
        in, not at the edge of its reach."""
        base = self.s["base_pos"]
        here = self.eef.copy()
        up = here + np.array([0.0, 0.0, 0.04])
        yield from self.move(up, self.rot(), OPEN, tol=0.02, max_steps=20)
        target = np.array([base[0] + 0.5, 0.5 * here[1], up[2]])
        yield from self.move(target, DOWN, OPEN, tol=0.03, rot_tol=0.15, max_steps=50)

    def retreat(self) -> Iterator[Action]:
        up = self.eef.copy()
        up[2] += 0.08
        yield from self.move(up, self.rot(), OPEN, tol=0.02, max_steps=30)

    # -- grasping -----------------------------------------------------------------------------
    def grasp_candidates(self, obj: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(fingertip point, hand rotation) candidates, best first, avoiding neighbours."""
        b = self.body(obj)
        lo, hi = b["lo"], b["hi"]
        centre = 0.5 * (lo + hi)
        height = hi[2] - lo[2]
        neighbours = self.boxes((obj,))
        base = self.s["base_pos"][:2]
        # The arm runs out of reach about 0.75 m out at table height: take the near side.
        reach = lambda p: 1.0 * float(np.linalg.norm(p[:2] - base))  # noqa: E731
        cands = []
        if _hollow(obj):
            # Hollow or handled things: take the rim / wall, closing radially.
            rx, ry = 0.5 * (hi[:2] - lo[:2])
            radius = max(0.02, min(rx, ry) - 0.012)
            depth = min(0.02, 0.4 * height)
            if "moka" in obj:
                handle = self._handle_grasp(obj)
                if handle is not None:
                    return [(handle[0], self.lean(*handle))]
            for yaw in np.deg2rad(np.arange(-90, 90, 15)):
                rot = down_rot(yaw)
                u = closing_axis(rot)
                for sign in (1, -1):
                    p = np.array([b["pos"][0], b["pos"][1], hi[2] - depth])
                    p[:2] += sign * radius * u[:2]
                    cost = 10 * hand_collision(neighbours, p, rot, half_gap=RIM_HALF_GAP) + 0.02 * abs(yaw) + reach(p)
                    cands.append((cost, p, rot))
        else:
            depth = min(0.045, 0.5 * height)
            local = b["half_local"]
            body_rot = Rotation.from_quat(b["quat"][[1, 2, 3, 0]]).as_matrix()
            for yaw in np.deg2rad(np.arange(-90, 90, 15)):
                rot = down_rot(yaw)
                u = closing_axis(rot)
                width = 2 * float(np.abs(u @ body_rot) @ local)
                if width > GRIPPER_MAX:
                    continue
                p = np.array([centre[0], centre[1], hi[2] - depth])
                cost = 10 * hand_collision(neighbours, p, rot, half_gap=width / 2 + 0.012) + width + 0.01 * abs(yaw)
                cands.append((cost, p, rot))
        cands.sort(key=lambda c: c[0])
        return [(p, self.lean(p, r)) for _, p, r in cands]

    def lean(self, p: np.ndarray, rot: np.ndarray) -> np.ndarray:
        """Tilt the fingers away from the robot for points near the edge of its reach: a top-down
        wrist there fights the arm's joint limits and stalls."""
        out = p[:2] - self.s["base_pos"][:2]
        dist = float(np.linalg.norm(out))
        phi = float(np.clip((dist - LEAN_FROM) * 4.0, 0.0, 0.45))
        if phi == 0.0:
            return rot
        axis = np.array([-out[1], out[0], 0.0]) / dist
        return Rotation.from_rotvec(-phi * axis).as_matrix() @ rot

    def _handle_grasp(self, obj: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A side handle (the parts far out from the body's axis): grip it across its thin side."""
        b = self.body(obj)
        out, dist = self._radial(obj)
        if dist.max() < HANDLE_FROM:
            return None
        # Only the farthest part and what lies on its side (the handle, not the spout opposite).
        far = (dist > HANDLE_FROM) & (out @ out[int(np.argmax(dist))] > 0)
        lo, hi = b["boxes"][far, 0].min(0), b["boxes"][far, 1].max(0)
        half = 0.5 * (hi - lo)
        yaw = math.pi / 2 if half[0] < half[1] else 0.0  # closing axis along the thin side
        p = np.array([0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), hi[2] - 0.02])
        return p, down_rot(yaw)

    def _radial(self, obj: str) -> tuple[np.ndarray, np.ndarray]:
        """Each collision part's horizontal offset from the body's origin, and its length."""
        b = self.body(obj)
        out = b["boxes"].mean(1)[:, :2] - b["pos"][:2]
        return out, np.linalg.norm(out, axis=1)

    def holding(self, obj: str, z_before: float) -> bool:
        b = self.body(obj)
        lifted = b["pos"][2] - z_before > 0.02
        near = np.linalg.norm(b["pos"][:2] - self.eef[:2]) < 0.12
        return lifted and near and self.finger() > HOLD_MIN_QPOS

    def pick(self, obj: str) -> Iterator[Action]:
        """Grasp and lift `obj`; a blocked descent or a failed lift moves on to another grasp.

        Returns True when the object is held."""
        tried: list[tuple[np.ndarray, np.ndarray]] = []
        for attempt in range(self.max_grasp_attempts):
            every = self.grasp_candidates(obj)
            if not every:
                self.log.append(f"no grasp of {obj} fits the gripper now")  # e.g. it fell on its side
                return False
            # After a failure, the best grasp from a clearly different direction (what blocked the
            # hand is likely to block a grasp turned 15 degrees as well), then any untried one.
            cands = [c for c in every if not any(_yaw_gap(c[1], t[1]) < math.radians(40) for t in tried)]
            cands = cands or [c for c in every if not any(_similar(c, t) for t in tried)] or every
            p, rot = cands[0] if attempt == 0 else cands[int(self.rng.integers(0, min(2, len(cands))))]
            tried.append((p, rot))
            z0 = self.body(obj)["pos"][2]
            above = p + np.array([0, 0, 0.08])
            yield from self.path(above, rot, OPEN, exclude=(obj,))
            grip = OPEN
            if _hollow(obj):
                # A rim needs no wide-open hand: half open, the outer finger stays clear of walls
                # close around the bowl (a drawer's). A gripper action of 0 leaves the command as
                # it is; the fingers settle about 2.6 cm either side of the grasp point.
                yield from self.grip(CLOSE, rot, steps=RIM_PRECLOSE_STEPS)
                grip = 0.0
            yield from self.move(p, rot, grip, tol=0.006, max_steps=50, speed=0.6)
            if self.eef[2] - p[2] > 0.02:
                self.log.append(f"grasp {attempt + 1} of {obj}: descent blocked {self.eef[2] - p[2]:.3f} m above")
                yield from self.retreat()
                continue
            yield from self.grip(CLOSE, rot, steps=12)
            lift = self.eef.copy()
            lift[2] += 0.10
            yield from self.move(lift, rot, CLOSE, tol=0.02, max_steps=30, speed=0.6)
            if self.holding(obj, z0):
                return True
            self.log.append(f"grasp {attempt + 1} of {obj} failed")
            yield from self.grip(OPEN, rot, steps=10)
            yield from self.retreat()
        return False

    # -- skills -------------------------------------------------------------------------------
    def place_target(self, obj: str, target: str, kind: str) -> tuple[np.ndarray, float]:
        """Where the object's body origin goes (xy) and the height of its bottom at release."""
        sites, bodies = self.s["sites"], self.s["bodies"]
        if target in bodies:
            t = bodies[target]
            xy = t["pos"][:2].copy()
            return xy, support_height(self.boxes((obj,)), xy, 0.02) + 0.01
        site = sites[target]
        xy = self._free_spot(site, obj)
        parent = site["parent"]
        if kind == "in" and parent in bodies and not bodies[parent]["fixture"]:
            # A container object (basket): let go above the rim; a tall object (a bottle) goes lower,
            # its middle below the rim, so that it cannot topple out.
            height = float(bodies[obj]["hi"][2] - bodies[obj]["lo"][2])
            floor = support_height(self.boxes((obj,)), xy, 0.02) + 0.01
            return xy, max(floor, bodies[parent]["hi"][2] + 0.02 - max(0.0, height - 0.08))
        joint = self._slide_joint(target)
        if kind == "in" and joint:
            # A drawer open part way: the front of its inside, out from under the cabinet's top,
            # resting on the drawer's own floor (not on whatever covers its back part).
            j = self.s["joints"][joint]
            lo, hi = j["range"]
            front = np.asarray(j["axis"])[:2] * np.sign(lo if abs(lo) > abs(hi) else hi)
            half = float(np.abs(np.asarray(site["mat"]).T[:2, :2] @ front) @ np.asarray(site["size"])[:2])
            b = bodies[obj]
            radius = 0.5 * float(np.max(b["hi"][:2] - b["lo"][:2]))
            # Against the front wall, unless the drawer must shut again after: then a little way
            # back, so that the load clears the cabinet's frame as it rides in.
            shuts = any(p[0] == "close" and self._slide_joint(p[1]) == joint for p in self.s["goal"])
            xy = site["pos"][:2] + front * (DRAWER_PUT_FRONT if shuts else 1.0) * max(0.0, half - radius)
            return xy, support_height(j["boxes"], xy, 0.02) + 0.012
        return xy, support_height(self.boxes((obj,)), xy, 0.02) + 0.012

    def _free_spot(self, site: dict, obj: str) -> np.ndarray:
        """The point of a region farthest from the other objects already in it (two pots, one stove)."""
        centre = site["pos"][:2].copy()
        size = np.asarray(site["size"][:2], dtype=float)
        others = [b["pos"][:2] for n, b in self.s["bodies"].items()  # not the container itself (a basket)
                  if n not in (obj, site["parent"]) and not b["fixture"] and np.all(np.abs(b["pos"][:2] - centre) < size + 0.02)]
        sharing = sum(1 for p in self.s["goal"] if len(p) == 3 and p[2] == site["name"])
        if sharing < 2 and not others:
            return centre
        # Several objects go here: opposite corners, away from whatever is there already.
        corners = [centre + np.array([fx, fy]) * 0.65 * size for fx in (-1, 1) for fy in (-1, 1)]
        if not others:
            return corners[0]
        return max(corners, key=lambda c: min(np.linalg.norm(c - o) for o in others))

    def pick_place(self, obj: str, target: str, kind: str) -> Iterator[Action]:
        site = self.s["sites"].get(target)
        if site is not None and site["joints"]:
            joint = self._slide_joint(target)
            if joint and not self._is_open(joint):
                yield from self.slide(target, opening=True, amount=DRAWER_PUT_OPEN)
        held = yield from self.pick(obj)
        if not held:
            return
        rot = self.rot_snap()
        for _ in range(2):
            xy, bottom = self.place_target(obj, target, kind)
            b = self.body(obj)
            offset = self.eef - b["pos"]  # keep the grasp: move the object's origin over the target
            lowest = self.eef[2] - b["lo"][2]
            goal = np.array([xy[0] + offset[0], xy[1] + offset[1], bottom + lowest])
            rel0 = self.body(obj)["pos"] - self.eef  # a held object keeps (about) this offset
            in_hand = lambda: np.linalg.norm(self.body(obj)["pos"] - self.eef - rel0) < 0.05  # noqa: E731
            yield from self.path(goal + np.array([0, 0, 0.04]), rot, CLOSE, carried=obj, guard=in_hand)
            if not in_hand():
                self.log.append(f"{obj} dropped on the way")
                yield from self.grip(OPEN, rot, steps=8)
                yield from self.retreat()
                return  # the outer loop tries again
            xy, _ = self.place_target(obj, target, kind)
            goal[:2] = xy + (self.eef - self.body(obj)["pos"])[:2]
            yield from self.move(goal, rot, CLOSE, tol=0.008, max_steps=40, speed=0.5)
            break
        yield from self.grip(OPEN, rot, steps=10)
        yield from self.retreat()

    def rot_snap(self) -> np.ndarray:
        """The current hand rotation (keep the grasp as it is while carrying)."""
        return self.rot()

    def _is_open(self, joint: str, margin: float = 0.03) -> bool:
        """Within `margin` of the joint's far end (LIBERO's drawers count as open 0.02 from it)."""
        j = self.s["joints"][joint]
        lo, hi = j["range"]
        far = lo if abs(lo) > abs(hi) else hi
        return abs(j["qpos"] - far) < margin

    def slide(self, region: str, opening: bool, amount: float | None = None) -> Iterator[Action]:
        """Open or close a drawer: take the handle and pull, or push the front."""
        joint = self._slide_joint(region)
        j = self.s["joints"][joint]
        lo, hi = j["range"]
        far = lo if abs(lo) > abs(hi) else hi
        goal_q = (far if amount is None else float(np.sign(far)) * amount) if opening else 0.0
        direction = np.asarray(j["axis"]) * np.sign(goal_q - j["qpos"])  # world motion of the drawer
        boxes = j["boxes"]
        front_dir = np.asarray(j["axis"]) * np.sign(far)
        centres = boxes.mean(1)
        handle = centres[int(np.argmax(centres @ front_dir))]
        yaw = math.atan2(-front_dir[0], front_dir[1])  # closing axis along the pull direction
        # Fingers in from the front and above (tilted), so the hand clears what is above the handle.
        tilt = -1.3 * np.sign(front_dir[1]) if abs(front_dir[1]) > 0.5 else 0.0
        if opening:
            rot = self.nearest(down_rot(yaw, tilt))
            approach = rot[:, 2]  # fingers point along the hand's z axis
            yield from self.path(handle - 0.08 * approach, rot, OPEN)
            yield from self.move(handle, rot, OPEN, tol=0.006, max_steps=50, speed=0.5)
            yield from self.grip(CLOSE, rot, steps=12)
            dist = abs(goal_q - j["qpos"]) + 0.02
            target = self.eef + direction * dist
            for _ in range(80):
                if abs(self.s["joints"][joint]["qpos"] - goal_q) < 0.006:
                    break
                yield self.action_to(target, rot, CLOSE) * np.r_[0.5 * np.ones(3), np.ones(4)]
            yield from self.grip(OPEN, rot, steps=10)
            yield from self.move(self.eef - 0.06 * approach, rot, OPEN, tol=0.02, max_steps=20)
            yield from self.home()
        else:
            # Fingers toward the front (tilted like the pull), palm wide along it and outside, so
            # the hand can follow the front flush with the cabinet without the palm hitting it.
            rot = self.nearest(down_rot(yaw + math.pi / 2, tilt))
            approach = rot[:, 2]
            yield from self.grip(CLOSE, self.rot(), steps=8)
            yield from self.path(handle - 0.06 * approach, rot, CLOSE)
            yield from self.move(handle - 0.01 * approach, rot, CLOSE, tol=0.008, max_steps=30, speed=0.6)
            for _ in range(80):
                q = self.s["joints"][joint]["qpos"]
                if (q - goal_q) * np.sign(far) < -0.001:  # LIBERO counts a drawer closed just past 0
                    break
                target = self.eef + direction * 0.04
                target[2] = handle[2]
                yield self.action_to(target, rot, CLOSE)
            yield from self.move(self.eef - 0.06 * approach, rot, CLOSE, tol=0.02, max_steps=20)
            yield from self.home()

    def turn_knob(self, fixture: str) -> Iterator[Action]:
        """Turn a knob (hinge about z) to 'on': grip its handle (the tallest part) and twist, the
        hand following the handle round the hinge axis."""
        joint = self._hinge_joint(fixture)
        j = self.s["joints"][joint]
        sense = 1.0 if j["range"][1] > abs(j["range"][0]) else -1.0  # 'on' is the larger-magnitude end
        spin = float(np.sign(j["axis"][2])) * sense  # world turning direction about +z
        for attempt in range(3):
            j = self.s["joints"][joint]
            axis = np.asarray(j["anchor"])
            boxes = j["boxes"]
            top = boxes[:, 1, 2].max()
            handle = boxes[boxes[:, 1, 2] > top - 0.015]
            lo, hi = handle[:, 0].min(0), handle[:, 1].max(0)
            centre = 0.5 * (lo + hi)
            half = 0.5 * (hi - lo)
            # Close across the handle's thin side.
            yaw = 0.0 if half[1] < half[0] else math.pi / 2
            p0 = np.array([centre[0], centre[1], top - 0.015 - 0.005 * attempt])
            if not np.allclose(self.nearest(down_rot(yaw)), down_rot(yaw)):
                yaw += math.pi  # the same grip, half a turn nearer the hand's yaw now
            rot0 = down_rot(yaw)
            yield from self.path(p0 + np.array([0, 0, 0.06]), rot0, OPEN)
            yield from self.move(p0, rot0, OPEN, tol=0.005, max_steps=40, speed=0.5)
            yield from self.grip(CLOSE, rot0, steps=12)
            q0 = self.s["joints"][joint]["qpos"]
            arm = p0[:2] - axis[:2]
            for k in range(70):
                q = self.s["joints"][joint]["qpos"]
                if (q - q0) * sense >= 0.0 and q * sense >= 0.75:
                    break
                phi = spin * min(1.0, 0.04 * (k + 1))  # turn up to 1 rad beyond the start
                c, sn = math.cos(phi), math.sin(phi)
                p = axis[:2] + np.array([c * arm[0] - sn * arm[1], sn * arm[0] + c * arm[1]])
                yield self.action_to(np.array([p[0], p[1], p0[2]]), down_rot(yaw + phi), CLOSE)
            yield from self.grip(OPEN, self.rot(), steps=8)
            yield from self.retreat()
            yield from self.home()
            if self.s["joints"][joint]["qpos"] * sense >= 0.5:
                return

    def push_to(self, obj: str, region: str) -> Iterator[Action]:
        """Slide a flat object with a rim (a plate) across the table until its centre is in the
        region: closed fingers inside the plate push its trailing rim, so no room behind it is needed."""
        site = self.s["sites"][region]
        rot = self.nearest(down_rot(math.pi / 2))
        yield from self.grip(CLOSE, self.rot(), steps=8)
        for attempt in range(3):
            b = self.body(obj)
            goal = site["pos"][:2]
            d = goal - b["pos"][:2]
            if np.linalg.norm(d) < 0.015:
                return
            u = d / np.linalg.norm(d)
            radius = 0.5 * float(np.min(b["hi"][:2] - b["lo"][:2]))
            inset = max(0.0, radius - 0.03)  # fingers this far from the centre, against the trailing rim
            z = b["hi"][2] - 0.006
            start = b["pos"][:2] - u * inset
            yield from self.path(np.array([start[0], start[1], z + 0.05]), rot, CLOSE, exclude=(obj,))
            yield from self.move(np.array([start[0], start[1], z]), rot, CLOSE, tol=0.006, max_steps=30, speed=0.5)
            for _ in range(120):
                b = self.body(obj)
                d = goal - b["pos"][:2]
                if np.linalg.norm(d) < 0.01:
                    break
                # Lead the plate along u; steer back onto the line through its centre.
                behind = b["pos"][:2] - u * inset
                side = (self.eef[:2] - behind) - u * float(u @ (self.eef[:2] - behind))
                push = self.eef[:2] + u * min(0.03, float(np.linalg.norm(d))) - side
                yield self.action_to(np.array([push[0], push[1], z - 0.004]), rot, CLOSE)
            yield from self.retreat()

    def _handle_out(self, obj: str, region: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(n, handle boxes): the opening's outward direction (xy) and the parts of `obj`'s handle,
        if it has one that faces the opening of `region`'s box; else None."""
        joint = self._door_of(region)
        r0, _, _ = self.door_frame(joint)
        anchor = np.asarray(self.s["joints"][joint]["anchor"])[:2]
        n = np.array([-r0[1], r0[0]])  # across the shut door's line, away from the box's centre
        if n @ (self.s["sites"][region]["pos"][:2] - anchor) > 0:
            n = -n
        out, dist = self._radial(obj)
        if dist.max() < HANDLE_FROM or (out[int(np.argmax(dist))] / dist.max()) @ n < 0.7:
            return None
        return n, self.body(obj)["boxes"][(dist > HANDLE_FROM) & (out @ n > 0.03)]

    def insert(self, obj: str, region: str) -> Iterator[Action]:
        """Put a mug into a box with a door (a microwave): the hand cannot go in above it, so take
        the handle from the side, fingers pointing into the box, carry the mug in level, let go on
        the floor and back out."""
        found = self._handle_out(obj, region)
        if found is None:
            self.log.append(f"{obj}: its handle no longer faces the opening")
            return
        n, handle = found
        joint = self._door_of(region)
        if abs(self.s["joints"][joint]["qpos"]) < DOOR_WIDE - 0.2:
            # A door open less than square: the hand, wide across the handle, would catch its edge.
            yield from self.swing(joint, float(np.sign(self.s["joints"][joint]["qpos"])) * DOOR_WIDE)
        site = self.s["sites"][region]
        anchor = np.asarray(self.s["joints"][joint]["anchor"])
        along = handle.mean(1)[:, :2] @ n
        lateral = np.array([n[1], -n[0]])
        side = float(handle.mean(1)[:, :2].mean(0) @ lateral)
        top = float(handle[:, 1, 2].max())
        p = float(along.min() + 0.5 * (along.max() - along.min())) * n + side * lateral
        grasp = np.array([p[0], p[1], top - 0.008])
        # Fingers into the box and down by INSERT_TILT, closing across the handle (along
        # `lateral`): the wrist stays above whatever stands behind the mug.
        tilt = INSERT_TILT
        zh = np.array([-n[0] * math.cos(tilt), -n[1] * math.cos(tilt), -math.sin(tilt)])
        yh = np.array([lateral[0], lateral[1], 0.0])
        rot = np.column_stack([np.cross(yh, zh), yh, zh])
        z0 = self.body(obj)["pos"][2]
        yield from self.path(grasp + 0.10 * np.r_[n, 0.0] + np.array([0, 0, 0.03]), rot, OPEN, exclude=(obj,))
        yield from self.move(grasp + 0.10 * np.r_[n, 0.0], rot, OPEN, tol=0.01, max_steps=40, speed=0.6)
        yield from self.move(grasp, rot, OPEN, tol=0.006, max_steps=40, speed=0.4)
        yield from self.grip(CLOSE, rot, steps=12)
        # Floor of the box: the highest part of the parent under the region's centre, below it.
        parent = self.body(site["parent"])["boxes"]
        c = site["pos"]
        under = (parent[:, 0, 0] <= c[0]) & (parent[:, 1, 0] >= c[0]) & (parent[:, 0, 1] <= c[1]) \
            & (parent[:, 1, 1] >= c[1]) & (parent[:, 1, 2] < c[2])
        floor = float(parent[under, 1, 2].max()) if under.any() else float(c[2] - site["size"][2])
        b = self.body(obj)
        below = self.eef[2] - b["lo"][2]
        lift = self.eef.copy()
        lift[2] = floor + 0.015 + below
        yield from self.move(lift, rot, CLOSE, tol=0.01, max_steps=40, speed=0.5)
        if not self.holding(obj, z0):
            self.log.append(f"{obj}: handle grasp failed")
            yield from self.grip(OPEN, rot, steps=10)
            yield from self.move(self.eef + 0.10 * np.r_[n, 0.0], rot, OPEN, tol=0.02, max_steps=30)
            yield from self.home()
            return
        b = self.body(obj)
        ext = b["boxes"][:, :, :2].reshape(-1, 2) - b["pos"][:2]
        front_off, back_off = float((ext @ n).max()), float((-ext @ n).max())
        front = float(anchor[:2] @ n)
        back_wall = parent[(parent[:, 0, 2] < floor + 0.05) & (parent[:, 1, 2] > floor + 0.05)]
        deep = [float(bx @ n) for bx in back_wall.reshape(-1, 2, 3)[:, :, :2].reshape(-1, 2)
                if float(bx @ n) < float(c[:2] @ n)]
        back = max(deep) if deep else float(c[:2] @ n) - float(site["size"][1])
        # Deep in, just off the back wall: a mug carried by its handle lags a little, and a handle
        # left across the door's line stops it from shutting.
        s_goal = min(back + back_off + 0.008, front - front_off - 0.01)
        t_goal = float(c[:2] @ lateral)
        offset = self.eef - b["pos"]
        goal_xy = s_goal * n + t_goal * lateral + offset[:2]
        rel0 = b["pos"] - self.eef
        in_hand = lambda: np.linalg.norm(self.body(obj)["pos"] - self.eef - rel0) < 0.04  # noqa: E731
        outside = goal_xy + 0.12 * n
        yield from self.move([outside[0], outside[1], lift[2]], rot, CLOSE, tol=0.01, max_steps=80, speed=0.5, guard=in_hand)
        yield from self.move([goal_xy[0], goal_xy[1], lift[2]], rot, CLOSE, tol=0.006, max_steps=60, speed=0.3, guard=in_hand)
        yield from self.grip(OPEN, rot, steps=10)
        yield from self.move(self.eef + 0.12 * np.r_[n, 0.0], rot, OPEN, tol=0.02, max_steps=40, speed=0.5)
        # Straight up, not home: the way home crosses the open door's swing.
        yield from self.move(self.eef + np.array([0.0, 0.0, 0.12]), DOWN, OPEN, tol=0.02, rot_tol=0.2, max_steps=40)

    def swing_shut(self, fixture: str) -> Iterator[Action]:
        yield from self.swing(self._door_joint(fixture), 0.0)

    def swing(self, joint: str, goal_q: float) -> Iterator[Action]:
        """Swing a hinged door to `goal_q`: closed fingers against the leaf (its outer face to shut
        it, its inner face to open it further), following it round the hinge."""
        for attempt in range(2):
            j = self.s["joints"][joint]
            anchor = np.asarray(j["anchor"])
            r0, m0, length = self.door_frame(joint)
            sense = float(np.sign(j["axis"][2]))
            shutting = abs(goal_q) < abs(j["qpos"])
            side = 1.0 if shutting else -1.0  # which side of the leaf the hand pushes from
            # Half way along the leaf: the hand, wide along it, then clears the box's control panel
            # beside a shut door and what stands in front of an open one.
            rho = 0.5 * length
            z = float(j["boxes"][:, 0, 2].min()) + 0.05

            def contact(q: float, outside: float) -> tuple[np.ndarray, np.ndarray]:
                """Where the fingertips go: `outside` the hinge's line, on the pushing side."""
                r = _rot2(sense * q) @ r0
                m = _rot2(sense * q) @ m0
                xy = anchor[:2] + rho * r - side * outside * m
                yaw = math.atan2(-r[0], r[1])  # closing axis along the leaf: the hand flat against it
                return np.array([xy[0], xy[1], z]), down_rot(yaw)

            p, rot = contact(j["qpos"], outside=0.045 if shutting else 0.04)
            yield from self.grip(CLOSE, self.rot(), steps=6)
            yield from self.path(p, rot, CLOSE)
            for _ in range(120):
                q = self.s["joints"][joint]["qpos"]
                if abs(q - goal_q) < 0.004 or (not shutting and abs(q) > abs(goal_q)):
                    break
                lead = float(np.clip(goal_q - q, -0.25, 0.25))
                # Aim well into the leaf: the last centimetres of a shut need a firm push (the OSC
                # pushes in proportion to the error).
                target, rot = contact(q + lead, outside=-0.035 if shutting else 0.0)
                yield self.action_to(target, rot, CLOSE)
            m = _rot2(sense * self.s["joints"][joint]["qpos"]) @ m0
            yield from self.move(self.eef - side * 0.06 * np.r_[m, 0.0], self.rot(), CLOSE, tol=0.02, max_steps=20)
            yield from self.retreat()
            if shutting:
                yield from self.home()
            q = self.s["joints"][joint]["qpos"]
            if abs(q - goal_q) < 0.005 or (not shutting and abs(q) >= abs(goal_q) - 0.05):
                return


def _rot2(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


_ORDER = {"open": 0, "turnon": 1, "in": 2, "on": 2, "close": 3}


def _hollow(obj: str) -> bool:
    """Things taken by the rim or wall (or handle), not across their body."""
    return any(k in obj for k in ("bowl", "mug", "moka", "basket", "plate"))


def _yaw_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two hands' closing axes in the horizontal plane, mod 180 degrees (a parallel
    gripper turned half a turn is the same grasp)."""
    u, v = closing_axis(a)[:2], closing_axis(b)[:2]
    ang = abs(math.atan2(u[0] * v[1] - u[1] * v[0], float(u @ v))) % math.pi
    return min(ang, math.pi - ang)


def _similar(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Two grasps at nearly the same point with nearly the same hand yaw."""
    angle = Rotation.from_matrix(a[1] @ b[1].T).magnitude()
    return np.linalg.norm(a[0] - b[0]) < 0.02 and angle < 0.4


# -- geometry helpers ---------------------------------------------------------------------------
def corridor_top(boxes: np.ndarray, a: np.ndarray, b: np.ndarray, radius) -> float:
    """Highest box top whose xy footprint comes within `radius` (scalar or per axis) of segment a-b."""
    if len(boxes) == 0:
        return 0.0
    radius = np.broadcast_to(np.asarray(radius, dtype=float), (2,))
    n = max(2, int(np.linalg.norm(b - a) / 0.01) + 1)
    pts = a[None, :] + np.linspace(0, 1, n)[:, None] * (b - a)[None, :]
    lo = boxes[:, 0, :2] - radius
    hi = boxes[:, 1, :2] + radius
    hit = ((pts[:, None, :] >= lo[None]) & (pts[:, None, :] <= hi[None])).all(-1).any(0)
    return float(boxes[hit, 1, 2].max()) if hit.any() else 0.0


def support_height(boxes: np.ndarray, xy: np.ndarray, radius: float) -> float:
    """Top of the highest box under a disc at `xy` (where something put there comes to rest)."""
    return corridor_top(boxes, xy, xy, radius)


def hand_collision(boxes: np.ndarray, p: np.ndarray, rot: np.ndarray, half_gap: float = 0.045) -> float:
    """How much the open hand at fingertip point `p` overlaps boxes (a rough cost, metres)."""
    u = closing_axis(rot)[:2]
    v = np.array([-u[1], u[0]])
    cost = 0.0
    # Fingers: two small pads either side of p along the closing axis, 5 cm tall.
    parts = [(p[:2] + s * half_gap * u, 0.012, 0.012, p[2] - 0.005, p[2] + 0.05) for s in (1, -1)]
    # Palm: wide along the closing axis, from 5 cm above the fingertips.
    parts.append((p[:2], 0.10, 0.035, p[2] + 0.05, p[2] + 0.15))
    for c, hu, hv, z0, z1 in parts:
        corners = np.array([c + su * hu * u + sv * hv * v for su in (1, -1) for sv in (1, -1)])
        plo, phi = corners.min(0), corners.max(0)
        ov = np.minimum(phi, boxes[:, 1, :2]) - np.maximum(plo, boxes[:, 0, :2])
        oz = np.minimum(z1, boxes[:, 1, 2]) - np.maximum(z0, boxes[:, 0, 2])
        hit = (ov > 0).all(1) & (oz > 0)
        if hit.any():
            cost += float(np.sum(np.minimum(ov[hit].min(1), 0.05)) + np.sum(np.minimum(oz[hit], 0.05)))
    return cost
