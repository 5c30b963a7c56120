"""A stand-in WidowX robot server for tests and demos: `nora-bench widowx-sim-server`.

It answers as bridge_data_robot's `WidowXActionServer` does (`widowx_envs/widowx_envs/
widowx_env_service.py` at a902e5b96c518deddc4d756c26f32d033cef5718, over agentlace's ActionServer,
`agentlace/action.py` + `zmq_wrapper/req_rep.py` at 76984f9b854b9ad88c78b3e5f0319e6e3c573e34):
- observations, whatever keys are asked for: `full_image` = `mat_to_jpeg(rgb)` (OpenCV JPEG of
  the RGB camera frame: the real `render()` flips the camera's BGR to RGB first), `image` = the
  frame resized to `image_size` per camera, CHW, flattened, float32 in [0, 1], shape (n_cams, 3*S*S),
  `state` = [x, y, z, roll, pitch, yaw, gripper] float64; before `init`, a random 480x640 raw
  array as both images and `{}` as state, as the real server does;
- actions answer `{"status": ...}`: NOT_INITIALIZED before `init`, EXECUTION_FAILURE for an
  unknown key; an exception in a handler leaves the request unanswered and restarts the socket.
Only the robot is simulated: an arm whose end effector integrates the delta actions it receives
(clipped to the bridge workspace), its third-person camera rendered with MuJoCo (a table, a pot
and a few toy objects, a two-finger gripper on a mocap body; the MuJoCo Menagerie WidowX model on
PyPI needs MuJoCo >= 3.2 and downloads its assets at run time, neither possible here).

Deviations, each an option: `--full-image-encoding raw` sends the array itself (servers before
bridge_data_robot 6325002, 2023-10-04). Fault injection for tests: `--config-version` speaks
another config hash, `--forbidden-pickle` answers the handshake with a pickle that would create a
file, `--die-after-steps N` exits without answering the N-th step_action (a lost connection),
`--fault KIND --fault-after N` answers every observation after the first N with a fault
(`FAULTS`: a malformed or truncated JPEG, a wrong shape, a hostile pickle).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import typer

from nora_bench import UserError
from nora_bench.envs.widowx_protocol import DEFAULT_PORT, ActionServer, WidowXStatus, jpeg_to_mat, mat_to_jpeg, widowx_config

# bridge_data_robot's workspace ([x, y, z] low / high, metres, robot base frame: x forward, y left,
# z up) and its start pose [x, y, z, roll, pitch, yaw, gripper].
WORKSPACE_LOW = np.array([0.1, -0.15, -0.01])
WORKSPACE_HIGH = np.array([0.45, 0.25, 0.25])
START_STATE = np.array([0.3, 0.0, 0.15, 0.0, 0.0, 0.0, 1.0])
FULL_IMAGE_HW = (480, 640)

SCENE_XML = """
<mujoco model="widowx-stand-in">
  <compiler angle="radian"/>
  <visual><global offwidth="640" offheight="480"/><quality shadowsize="0"/></visual>
  <asset>
    <texture name="wood" type="2d" builtin="checker" rgb1="0.62 0.5 0.38" rgb2="0.58 0.46 0.34" width="256" height="256"/>
    <material name="table" texture="wood" texrepeat="6 6"/>
  </asset>
  <worldbody>
    <light pos="0.3 0.3 1.2" dir="0 -0.2 -1" diffuse="0.8 0.8 0.8" castshadow="false"/>
    <light pos="-0.3 -0.4 1.0" dir="0.3 0.4 -1" diffuse="0.3 0.3 0.3" castshadow="false"/>
    <geom name="table" type="plane" size="0.8 0.8 0.02" pos="0.3 0 -0.02" material="table"/>
    <body name="focus" pos="0.28 0.03 0.0"/>
    <camera name="third_person" mode="targetbody" target="focus" pos="0.78 0.42 0.5" fovy="55"/>
    <geom name="robot_base" type="cylinder" size="0.06 0.04" pos="0 0 0.02" rgba="0.15 0.15 0.15 1"/>
    <geom name="pot" type="cylinder" size="0.07 0.04" pos="0.33 0.12 0.02" rgba="0.55 0.57 0.6 1"/>
    <geom name="pot_inside" type="cylinder" size="0.06 0.001" pos="0.33 0.12 0.061" rgba="0.3 0.3 0.32 1"/>
    <geom name="carrot" type="capsule" size="0.012 0.035" pos="0.26 -0.06 0.012" euler="0 1.57 0.4" rgba="0.95 0.45 0.05 1"/>
    <geom name="banana" type="capsule" size="0.014 0.04" pos="0.38 -0.08 0.014" euler="1.57 0 0.9" rgba="0.95 0.85 0.2 1"/>
    <geom name="pink_toy" type="sphere" size="0.022" pos="0.2 0.06 0.022" rgba="0.95 0.5 0.7 1"/>
    <geom name="red_bottle" type="cylinder" size="0.018 0.045" pos="0.42 0.02 0.045" rgba="0.8 0.1 0.1 1"/>
    <body name="ee" mocap="true" pos="0.3 0 0.15">
      <geom name="wrist" type="cylinder" size="0.02 0.05" pos="0 0 0.07" rgba="0.1 0.1 0.1 1"/>
      <geom name="palm" type="box" size="0.015 0.045 0.012" pos="0 0 0.01" rgba="0.2 0.2 0.2 1"/>
      <geom name="finger_l" type="box" size="0.008 0.006 0.03" pos="0 0.035 -0.03" rgba="0.3 0.3 0.3 1"/>
      <geom name="finger_r" type="box" size="0.008 0.006 0.03" pos="0 -0.035 -0.03" rgba="0.3 0.3 0.3 1"/>
    </body>
  </worldbody>
</mujoco>
"""


class SimArm:
    """The simulated arm: end-effector pose and gripper, rendered by MuJoCo."""

    def __init__(self) -> None:
        from nora_bench.envs import configure_rendering

        configure_rendering()
        import mujoco

        self._mj = mujoco
        self.model = mujoco.MjModel.from_xml_string(SCENE_XML)
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, *FULL_IMAGE_HW)
        self._fingers = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("finger_l", "finger_r")]
        self.image_size = 256
        self.initialized = False
        self.state = START_STATE.copy()
        self.steps = 0
        self.last_frame: np.ndarray | None = None

    def set_pose(self, pose: np.ndarray) -> None:
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape == (4, 4):
            from scipy.spatial.transform import Rotation

            xyz, rpy = pose[:3, 3], Rotation.from_matrix(pose[:3, :3]).as_euler("xyz")
        else:
            xyz, rpy = pose[:3], pose[3:6]
        self.state[:3] = np.clip(xyz, WORKSPACE_LOW, WORKSPACE_HIGH)
        self.state[3:6] = np.clip(rpy, -np.pi / 2, np.pi / 2)

    def step(self, action: np.ndarray) -> None:
        """A delta end-effector action [dx, dy, dz, droll, dpitch, dyaw, gripper(1 open)] (or 5-D)."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape == (5,):  # 3 translations, yaw, gripper
            action = np.concatenate([action[:3], [0.0, 0.0], action[3:]])
        self.set_pose(np.concatenate([self.state[:3] + action[:3], self.state[3:6] + action[3:6]]))
        self.state[6] = float(np.clip(action[6], 0.0, 1.0))
        self.steps += 1

    def reset(self) -> None:
        self.state = START_STATE.copy()

    def render(self) -> np.ndarray:
        from scipy.spatial.transform import Rotation

        mj = self._mj
        self.data.mocap_pos[0] = self.state[:3]
        q = Rotation.from_euler("xyz", self.state[3:6]).as_quat()  # x, y, z, w
        self.data.mocap_quat[0] = [q[3], q[0], q[1], q[2]]
        half_gap = 0.012 + 0.025 * self.state[6]  # open fingers spread, closed ones meet
        self.model.geom_pos[self._fingers[0], 1] = half_gap
        self.model.geom_pos[self._fingers[1], 1] = -half_gap
        mj.mj_forward(self.model, self.data)
        self.renderer.update_scene(self.data, camera="third_person")
        return self.renderer.render().copy()

    def observation(self, encoding: str = "jpeg") -> dict:
        """The reply to an observation request, as WidowXActionServer.__observe builds it."""
        if not self.initialized:
            # The real server before init: "use dummy img with random noise".
            img = np.random.randint(0, 255, (480, 640, 3), dtype=np.uint8)
            return {"image": img, "state": {}, "full_image": img}
        full = self.last_frame = self.render()  # RGB, like bridge_data_robot's render() after its BGR -> RGB flip
        return {"image": np.stack([processed_image(full, self.image_size)], axis=0), "state": self.state.copy(),
                "full_image": mat_to_jpeg(full) if encoding == "jpeg" else full}

    def close(self) -> None:
        # mujoco 2.3.7's Renderer has no close(): free its GL context before EGL shuts down at exit.
        renderer, self.renderer = self.renderer, None
        if renderer is not None:
            renderer._mjr_context.free()
            renderer._gl_context.free()


def processed_image(image: np.ndarray, size: int) -> np.ndarray:
    """BridgeDataRailRLPrivateWidowX._get_processed_image: resize to size x size (anti-aliased;
    the real one uses skimage), uint8, CHW, flattened, float32 / 255."""
    import cv2

    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return np.float32(np.transpose(small, (2, 0, 1)).flatten()) / 255.0


class _Evil:
    """Pickles to a call of open(path, 'w'): proof that a client unpickles only allowed types."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malformed_jpeg(obs: dict, path: str) -> dict:
    # The JPEG's start and end markers kept, everything between scrambled: no header a decoder reads.
    jpeg = obs["full_image"]
    return {**obs, "full_image": jpeg[:2] + bytes(b ^ 0x5A for b in jpeg[2:-2]) + jpeg[-2:]}


def _truncated_jpeg(obs: dict, path: str) -> dict:
    jpeg = obs["full_image"]
    return {**obs, "full_image": jpeg[: len(jpeg) * 2 // 3]}


def _wrong_shape(obs: dict, path: str) -> dict:
    # A raw image in CHW order: the right bytes in the wrong layout.
    frame = jpeg_to_mat(obs["full_image"])
    return {**obs, "full_image": np.ascontiguousarray(frame.transpose(2, 0, 1))}


def _hostile_pickle(obs: dict, path: str) -> bytes:
    import pickle

    import lz4.frame

    return lz4.frame.compress(pickle.dumps({**obs, "state": _Evil(path)}))


# What `--fault KIND` sends instead of an observation (the hostile one creates the file at --fault-path).
FAULTS = {"malformed-jpeg": _malformed_jpeg, "truncated-jpeg": _truncated_jpeg, "wrong-shape": _wrong_shape,
          "hostile-pickle": _hostile_pickle}
ENCODINGS = ("jpeg", "raw")


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    config_version: str = "0.0.1"
    forbidden_pickle: str | None = None
    die_after_steps: int = 0
    full_image_encoding: str = "jpeg"
    fault: str | None = None
    fault_after: int = 0  # observations answered normally (after init) before the fault starts
    fault_path: str = ""  # the file a hostile pickle would create
    # A folder: each frame sent as full_image is also saved there (frame_NNNN.npy), and each
    # step_action's action appended to actions.jsonl (what a client sent, for tests).
    record_frames: str = ""

    def __post_init__(self):
        if self.full_image_encoding not in ENCODINGS:
            raise UserError(f"--full-image-encoding must be one of {', '.join(ENCODINGS)}")
        if self.fault is not None and self.fault not in FAULTS:
            raise UserError(f"unknown --fault {self.fault!r}; known: {', '.join(FAULTS)}")
        if self.fault == "hostile-pickle" and not self.fault_path:
            raise UserError("--fault hostile-pickle needs --fault-path (the file the pickle would create)")
        if self.fault and self.full_image_encoding != "jpeg":
            raise UserError("--fault works on JPEG observations: leave --full-image-encoding at jpeg")


def serve(options: ServerOptions) -> None:
    arm = SimArm()
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    served = {"obs": 0}

    def on_obs(keys) -> dict | bytes:
        # The real server answers every request with all three keys, whatever `keys` asks for.
        obs = arm.observation(options.full_image_encoding)
        if arm.initialized:
            served["obs"] += 1
            if options.record_frames:
                # What was encoded, for tests to compare with what a client decoded (not on the wire).
                np.save(os.path.join(options.record_frames, f"frame_{served['obs']:04d}.npy"), arm.last_frame)
            if options.fault and served["obs"] > options.fault_after:
                return FAULTS[options.fault](obs, options.fault_path)
        return obs

    def on_act(key: str, payload: dict) -> dict:
        # WidowXActionServer.__action: unknown key -> EXECUTION_FAILURE, then NOT_INITIALIZED before init.
        if key not in ("init", "move", "gripper", "reset", "step_action", "reboot_motor"):
            return {"status": WidowXStatus.EXECUTION_FAILURE}
        if key == "init":
            arm.image_size = int(payload["image_size"])
            arm.initialized = True
            arm.reset()
            return {"status": WidowXStatus.SUCCESS}
        if not arm.initialized:
            return {"status": WidowXStatus.NOT_INITIALIZED}
        if key == "step_action":
            if options.die_after_steps and arm.steps + 1 >= options.die_after_steps:
                print(f"widowx-sim-server: exiting at step_action {arm.steps + 1} (--die-after-steps)", flush=True)
                os._exit(0)
            arm.step(payload["action"])
            if options.record_frames:
                with open(os.path.join(options.record_frames, "actions.jsonl"), "a") as f:
                    f.write(json.dumps(np.asarray(payload["action"], dtype=np.float64).tolist()) + "\n")
        elif key == "move":
            arm.set_pose(payload["pose"])
        elif key == "gripper":
            arm.state[6] = 1.0 if float(payload["open"]) > 0.5 else 0.0
        elif key == "reset":
            arm.reset()
        return {"status": WidowXStatus.SUCCESS}

    raw = {}
    if options.forbidden_pickle:
        import pickle

        import lz4.frame

        raw["hash"] = lz4.frame.compress(pickle.dumps({"success": True, "payload": _Evil(options.forbidden_pickle)}))
    server = ActionServer(widowx_config(options.port, options.config_version), on_obs, on_act, host=options.host,
                          raw_replies=raw)
    # Render once before announcing readiness: the first EGL render takes a while.
    arm.render()
    print(f"widowx-sim-server listening on tcp://{options.host}:{options.port}", flush=True)
    try:
        server.serve(lambda: stop["flag"])
    finally:
        arm.close()


def command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(DEFAULT_PORT, help="Port of the REQ/REP action server."),
    config_version: str = typer.Option("0.0.1", help="Test: speak another ActionConfig version (another config hash)."),
    forbidden_pickle: Optional[str] = typer.Option(None, help="Test: answer the handshake with a pickle that would create this file."),
    die_after_steps: int = typer.Option(0, help="Test: exit without answering the N-th step_action (a lost connection)."),
    full_image_encoding: str = typer.Option("jpeg", help="jpeg (bridge_data_robot since 2023-10-04) or raw (older servers)."),
    fault: Optional[str] = typer.Option(None, help=f"Test: answer observations with a fault: {', '.join(FAULTS)}."),
    fault_after: int = typer.Option(0, help="Test: observations after init answered normally before --fault starts."),
    fault_path: str = typer.Option("", help="Test: the file --fault hostile-pickle's pickle would create."),
    record_frames: str = typer.Option("", help="Test: save each frame sent as full_image (.npy) and each action "
                                      "received (actions.jsonl) to this folder."),
) -> None:
    """Run a stand-in WidowX robot server (bridge_data_robot protocol, MuJoCo-rendered camera) until Ctrl-C."""
    try:
        serve(ServerOptions(host, port, config_version, forbidden_pickle, die_after_steps, full_image_encoding,
                            fault, fault_after, fault_path, record_frames))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2)


if __name__ == "__main__":
    typer.run(command)


__all__ = ["SimArm", "ServerOptions", "FAULTS", "processed_image", "serve", "command"]
