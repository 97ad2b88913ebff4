"""The Franka Emika Panda of the Franka Kitchen scene: names, limits and a robot-only model.

One constants module for the arm the planner reasons about. The numbers are read from
gymnasium-robotics 1.4.2, ``envs/assets/kitchen_franka/franka_assets/chain.xml`` (joint ranges,
the ``end_effector`` site), ``actuator.xml`` and ``franka_config.xml`` (the actuators' and the
env's position limits, intersected into :data:`JOINT_LOWER` / :data:`JOINT_UPPER`) and
``kitchen_assets/kitchen_env_model.xml`` (the robot's base body at
``pos="0 0 1.8" euler="0 0 1.57"`` in the world, the keyframe's arm joints).

:func:`load_panda_model` builds a MuJoCo model of the robot alone (no kitchen), placed at the
kitchen's base pose so that its world frame is the kitchen's world frame. MJX cannot load the
whole kitchen (it has no cylinder-mesh collisions), and kinematics needs no geometry at all, so
the default model has no geoms: each body keeps an explicit small inertia. Importing this module
loads neither MuJoCo nor JAX.

Conventions: meters and radians; the end-effector site's z axis is the approach direction and
the fingers close along its y axis.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from jflow.errors import ConfigError, DataError

ARM_JOINTS: tuple[str, ...] = tuple(f"robot:panda0_joint{i}" for i in range(1, 8))
"""The 7 arm joints, base to wrist."""
FINGER_JOINTS: tuple[str, ...] = ("robot:panda0_finger_joint1", "robot:panda0_finger_joint2")
NUM_ARM_JOINTS = 7

JOINT_LOWER_MJCF = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -1.6573, -2.8973])
"""Arm joint lower limits (rad) of the model: ``range`` in chain.xml."""
JOINT_UPPER_MJCF = np.array([2.8973, 1.7628, 2.8973, -0.4, 2.8973, 2.1127, 2.8973])
"""Arm joint upper limits (rad) of the model: ``range`` in chain.xml."""
CTRL_LOWER = np.array([-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -3.7525, -2.9671])
"""Lower ``ctrlrange`` (rad) of the arm's position actuators, franka_assets/actuator.xml."""
CTRL_UPPER = np.array([2.9671, 1.8326, 2.9671, 0.0, 2.9671, 2.1817, 2.9671])
"""Upper ``ctrlrange`` (rad) of the arm's position actuators, franka_assets/actuator.xml."""
ENV_POS_LOWER = np.array([-2.9, -1.8, -2.9, -3.1, -2.9, 0.0, -2.9])
"""Lower ``pos_bound`` (rad) of franka_assets/franka_config.xml: the kitchen env
(``FrankaRobot._ctrl_position_limits``) clips every position command to it."""
ENV_POS_UPPER = np.array([2.9, 1.8, 2.9, 0.0, 2.9, 3.8, 2.9])
"""Upper ``pos_bound`` (rad) of franka_config.xml (see :data:`ENV_POS_LOWER`)."""
JOINT_LOWER = np.maximum.reduce([JOINT_LOWER_MJCF, CTRL_LOWER, ENV_POS_LOWER])
"""Arm joint lower limits (rad) for planning and IK: the intersection of the model's joint
ranges, the actuators' ctrlranges and the env's position bounds, so that every planned
configuration is one the kitchen env can command. Only joint 6 (0-based index 5) differs from
the model's range: the env clips it to [0, 3.8], the model allows -1.6573, so its lower limit
is 0.0 here."""
JOINT_UPPER = np.minimum.reduce([JOINT_UPPER_MJCF, CTRL_UPPER, ENV_POS_UPPER])
"""Arm joint upper limits (rad) for planning and IK (see :data:`JOINT_LOWER`): the model's."""
FINGER_RANGE = (0.0, 0.04)
"""Each finger's slide range (m); the gripper opens to at most 0.08 m."""
MAX_GRASP_WIDTH = 0.08

HOME_QPOS = np.array([0.16, -1.76, 1.84, -2.51, 0.36, 0.79, 1.55])
"""The arm part of the kitchen model's keyframe (rad)."""

BASE_BODY = "panda0_link0"
EE_SITE = "end_effector"
"""The site between the fingertips, 0.21 m along link 7's z axis."""

BASE_POS = np.array([0.0, 0.0, 1.8])
"""The robot base body's position in the kitchen world (m)."""
BASE_YAW = 1.57
"""The robot base's rotation about the world z axis (rad; the XML says 1.57, not pi/2)."""
SHOULDER_HEIGHT = 0.333
"""Height of joint 2 above the base (m)."""
MAX_REACH = 0.855
"""Franka's documented maximum reach from the shoulder (m)."""

ASSET_SUBDIR = Path("envs") / "assets" / "kitchen_franka"


def kitchen_franka_dir() -> Path:
    """The installed ``gymnasium_robotics/envs/assets/kitchen_franka`` folder."""
    # find_spec locates the package without importing it (its import registers every env).
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or spec.origin is None:
        raise DataError("gymnasium-robotics is not installed; the Panda model comes from it")
    path = Path(spec.origin).parent / ASSET_SUBDIR
    if not (path / "franka_assets" / "chain.xml").is_file():
        raise DataError(f"Franka assets not found under {path} (expected franka_assets/chain.xml)")
    return path


def shoulder_position() -> np.ndarray:
    """Joint 2's position in the world (m): the centre of the reach sphere."""
    return BASE_POS + np.array([0.0, 0.0, SHOULDER_HEIGHT])


def world_from_base_matrix() -> np.ndarray:
    """The robot base pose in the kitchen world as a 4x4 matrix."""
    c, s = math.cos(BASE_YAW), math.sin(BASE_YAW)
    out = np.eye(4)
    out[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    out[:3, 3] = BASE_POS
    return out


def panda_mjcf() -> str:
    """An MJCF string of the robot alone at the kitchen's base pose (absolute include paths)."""
    root = kitchen_franka_dir() / "franka_assets"
    return f"""<mujoco model="panda_kitchen_robot">
  <include file="{root / "assets.xml"}"/>
  <compiler angle="radian" meshdir="{root / "meshes"}" inertiafromgeom="auto"
            inertiagrouprange="3 5"/>
  <worldbody>
    <body name="panda_base_mount" pos="{BASE_POS[0]} {BASE_POS[1]} {BASE_POS[2]}"
          euler="0 0 {BASE_YAW}">
      <include file="{root / "chain.xml"}"/>
    </body>
  </worldbody>
</mujoco>
"""


def load_panda_spec(*, with_geoms: bool = False):
    """A ``mujoco.MjSpec`` of the robot alone. Without geoms every body gets a fixed inertia."""
    import mujoco

    spec = mujoco.MjSpec.from_string(panda_mjcf())
    if not with_geoms:
        for geom in list(spec.geoms):
            spec.delete(geom)
        for body in spec.bodies:
            if body.name in ("world", ""):
                continue
            body.explicitinertial = True
            body.mass = 1.0
            body.ipos = [0.0, 0.0, 0.0]
            body.inertia = [0.01, 0.01, 0.01]
        for actuator in list(spec.actuators):
            spec.delete(actuator)
    return spec


def load_panda_model(*, with_geoms: bool = False):
    """Compile the robot-only ``mujoco.MjModel`` (see :func:`load_panda_spec`)."""
    spec = load_panda_spec(with_geoms=with_geoms)
    model = spec.compile()
    for name in ARM_JOINTS:
        if model.joint(name).id < 0:  # pragma: no cover - mujoco raises first
            raise ConfigError(f"Panda model lacks joint {name!r}")
    return model


def load_arm_model():
    """The kinematic chain alone: the robot-only model without geoms, without the two finger
    bodies, and with the joint-less bodies (the base mount, link 0) fused into the world
    (``fusestatic``). Its 7 joints are the arm joints, in order (``qpos`` = the arm's angles);
    the ``end_effector`` site sits on link 7 exactly as in :func:`load_panda_model`. This is the
    model the planner's kinematics (MJX) and the C-API reference IK use: 8 bodies instead of
    12, so every forward-kinematics pass does less work. It carries nothing kinematics does not
    read: no geoms, actuators, meshes, materials or textures, and one site."""
    spec = load_panda_spec(with_geoms=False)
    for body in list(spec.bodies):
        if "finger" in body.name:
            spec.delete(body)
    for asset in [*spec.meshes, *spec.materials, *spec.textures]:
        spec.delete(asset)
    spec.compiler.fusestatic = True
    model = spec.compile()
    names = [model.joint(i).name for i in range(model.njnt)]
    if names != list(ARM_JOINTS):  # pragma: no cover - guards a change of the assets
        raise ConfigError(f"the arm model's joints are {names}, expected {list(ARM_JOINTS)}")
    return model


def arm_qpos_indices(model) -> np.ndarray:
    """qpos addresses of the 7 arm joints in ``model``."""
    return np.array([model.jnt_qposadr[model.joint(name).id] for name in ARM_JOINTS])


def arm_dof_indices(model) -> np.ndarray:
    """Velocity (Jacobian column) addresses of the 7 arm joints in ``model``."""
    return np.array([model.jnt_dofadr[model.joint(name).id] for name in ARM_JOINTS])
