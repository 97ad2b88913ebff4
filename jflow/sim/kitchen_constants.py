"""Names and numbers of the Franka Kitchen scene (gymnasium-robotics 1.4.2, FrankaKitchen-v1).

One constants module for the scene and its robot, in mujoco_playground's style. Pure Python
(numpy only): importing it never loads MuJoCo or JAX.

Facts read from gymnasium_robotics/envs/franka_kitchen/*.py and the kitchen XML:

* the model file is ``envs/assets/kitchen_franka/kitchen_assets/kitchen_env_model.xml``;
* qpos 0..8 are the robot (7 arm joints, 2 fingers), 9..29 the kitchen objects;
* a task is complete when the L2 distance between the object's qpos slice and its goal is below
  ``BONUS_THRESH = 0.3`` (``KitchenEnv.compute_reward``);
* the action interface is 9 normalised joint velocities in ``[-1, 1]``, scaled by 2 rad/s,
  integrated over ``frame_skip = 40`` physics steps of 2 ms (dt = 0.08 s).
"""

from __future__ import annotations

import dataclasses

MODEL_RELPATH = "envs/assets/kitchen_franka/kitchen_assets/kitchen_env_model.xml"
"""The kitchen model, relative to the installed ``gymnasium_robotics`` package directory."""

# --- FrankaKitchen-v1 task facts (kitchen_env.py) -------------------------------------------
BONUS_THRESH = 0.3
"""FrankaKitchen-v1's completion threshold on the L2 distance to the goal qpos."""

ENV_OBS_ELEMENT_INDICES: dict[str, tuple[int, ...]] = {
    "bottom burner": (11, 12),
    "top burner": (15, 16),
    "light switch": (17, 18),
    "slide cabinet": (19,),
    "hinge cabinet": (20, 21),
    "microwave": (22,),
    "kettle": (23, 24, 25, 26, 27, 28, 29),
}
"""qpos indices of each FrankaKitchen-v1 task (``OBS_ELEMENT_INDICES``)."""

ENV_OBS_ELEMENT_GOALS: dict[str, tuple[float, ...]] = {
    "bottom burner": (-0.88, -0.01),
    "top burner": (-0.92, -0.01),
    "light switch": (-0.69, -0.05),
    "slide cabinet": (0.37,),
    "hinge cabinet": (0.0, 1.45),
    "microwave": (-0.75,),
    "kettle": (-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06),
}
"""FrankaKitchen-v1's goal qpos of each task (``OBS_ELEMENT_GOALS``)."""

ENV_FRAME_SKIP = 40
ENV_TIMESTEP = 0.002
ENV_DT = ENV_FRAME_SKIP * ENV_TIMESTEP
ENV_ACTION_SCALE = 2.0
"""Normalised actions in [-1, 1] are multiplied by this (rad/s or m/s) to give joint velocities."""

# --- Robot -----------------------------------------------------------------------------------
ROBOT_ARM_JOINTS: tuple[str, ...] = tuple(f"robot:panda0_joint{i}" for i in range(1, 8))
ROBOT_FINGER_JOINTS: tuple[str, ...] = ("robot:panda0_finger_joint1", "robot:panda0_finger_joint2")
ROBOT_JOINTS: tuple[str, ...] = ROBOT_ARM_JOINTS + ROBOT_FINGER_JOINTS
ROBOT_NQ = 9
ROBOT_BASE_BODY = "panda0_link0"
ROBOT_EE_SITE = "end_effector"
"""The site between the fingertips (z axis = approach direction)."""

ROBOT_HOME_QPOS: tuple[float, ...] = (0.16, -1.76, 1.84, -2.51, 0.36, 0.79, 1.55, 0.0, 0.0)
"""The robot part of the kitchen model's keyframe."""

GRIPPER_BODIES: tuple[str, ...] = ("panda0_leftfinger", "panda0_rightfinger")
GRIPPER_MESHES: tuple[str, ...] = ("hand_viz", "finger_viz")
"""Visual meshes segmented as ``gripper`` (the hand on link 7 and both fingers)."""

ROBOT_GEOM_GROUP = 2
"""The robot's visual geoms are moved to this geom group, so a render can hide the robot."""

# --- Kitchen objects ---------------------------------------------------------------------------
OBJECT_JOINTS: dict[str, tuple[str, ...]] = {
    "knob_1": ("knob_Joint_1", "bottom_right_burner"),
    "knob_2": ("knob_Joint_2", "bottom_left_burner"),
    "knob_3": ("knob_Joint_3", "top_right_burner"),
    "knob_4": ("knob_Joint_4", "top_left_burner"),
    "light_switch": ("light_switch", "light_joint"),
    "slide_door": ("slide_cabinet",),
    "hinge_left_door": ("left_hinge_cabinet",),
    "hinge_right_door": ("right_hinge_cabinet",),
    "microwave_door": ("microwave",),
    "kettle": ("kettle",),
}
"""The joints each movable object owns (a knob also drives its burner plate's small slide; the
light switch its light block). ``kettle`` is a free joint (7 qpos: xyz, wxyz)."""

SEGMENTATION_OBJECTS: tuple[str, ...] = (
    "background",  # 0: nothing rendered (sky box)
    "floor",  # 1
    "counters",  # 2
    "oven",  # 3: oven body and stove top
    "hood",  # 4: range hood and light-switch base plate
    "wall",  # 5
    "slide_cabinet",  # 6: the sliding-door cabinet's fixed body
    "slide_door",  # 7
    "hinge_cabinet",  # 8: the hinged cabinet's fixed body
    "hinge_left_door",  # 9
    "hinge_right_door",  # 10
    "microwave",  # 11: fixed body
    "microwave_door",  # 12
    "kettle",  # 13
    "light_switch",  # 14
    "light",  # 15: the light block under the hood (moves with the switch)
    "knob_1",  # 16: bottom-right burner knob
    "knob_2",  # 17: bottom-left burner knob
    "knob_3",  # 18: top-right burner knob
    "knob_4",  # 19: top-left burner knob
    "burner_1",  # 20: bottom-right burner plate
    "burner_2",  # 21: bottom-left
    "burner_3",  # 22: top-right
    "burner_4",  # 23: top-left
    "robot",  # 24: arm links and pedestal
    "gripper",  # 25: hand and fingers
)
"""Per-pixel segmentation ids: ``SEGMENTATION_OBJECTS[id]`` is the object's name."""

SEGMENTATION_IDS: dict[str, int] = {name: i for i, name in enumerate(SEGMENTATION_OBJECTS)}

BODY_TO_OBJECT: dict[str, str] = {
    "world": "floor",
    "counters": "counters",
    "ovenroot": "oven",
    "hoodroot": "hood",
    "lightswitchbaseroot": "hood",
    "wallroot": "wall",
    "wall2": "wall",
    "slide": "slide_cabinet",
    "slidelink": "slide_door",
    "hingecab": "hinge_cabinet",
    "hingeleftdoor": "hinge_left_door",
    "hingerightdoor": "hinge_right_door",
    "microroot": "microwave",
    "microdoorroot": "microwave_door",
    "kettleroot": "kettle",
    "lightswitchroot": "light_switch",
    "lightblock_hinge": "light",
    "knob 1": "knob_1",
    "knob 2": "knob_2",
    "knob 3": "knob_3",
    "knob 4": "knob_4",
    "Burner 1": "burner_1",
    "Burner 2": "burner_2",
    "Burner 3": "burner_3",
    "Burner 4": "burner_4",
}
"""Kitchen body -> segmentation object. Robot bodies map to ``robot``/``gripper`` by code."""

TEXTURED_OBJECTS: tuple[str, ...] = (
    "slide_door",
    "hinge_left_door",
    "hinge_right_door",
    "microwave_door",
    "kettle",
    "light_switch",
    "knob_1",
    "knob_2",
    "knob_3",
    "knob_4",
)
"""Objects whose opaque visual geoms get a procedural texture (re-randomised per episode)."""

BURNER_BODIES: dict[str, str] = {
    "bottom_right": "Burner 1",
    "bottom_left": "Burner 2",
    "top_right": "Burner 3",
    "top_left": "Burner 4",
}
BURNER_POSITIONS: dict[str, tuple[float, float, float]] = {
    "bottom_right": (0.221, 0.3389, 1.5934),
    "bottom_left": (-0.225, 0.3389, 1.5934),
    "top_right": (0.219, 0.7799, 1.5934),
    "top_left": (-0.222, 0.7799, 1.5934),
}
"""World positions of the four burner plates ("top" = further from the robot)."""

KETTLE_REST_Z = 1.62
"""Height of the kettle's body origin when it stands on a burner."""

KETTLE_HOME_QPOS: tuple[float, ...] = (-0.269, 0.35, 1.62, 1.0, 0.0, 0.0, 0.0)
"""The kettle on the bottom-left burner, as in the model's keyframe."""

# --- Cameras -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """A fixed camera added to the model: position, look-at target (world, meters), fovy (deg)."""

    name: str
    position: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy: float


CAMERAS: dict[str, CameraSpec] = {
    "front": CameraSpec("front", (0.35, -0.85, 2.8), (-0.3, 0.8, 2.15), 60.0),
    "side": CameraSpec("side", (-1.05, -0.45, 2.7), (-0.25, 0.8, 2.05), 65.0),
    "side_right": CameraSpec("side_right", (0.75, -0.55, 2.7), (-0.3, 0.85, 2.1), 65.0),
}
"""The cameras jflow adds to the kitchen (MuJoCo world-body cameras, up = +z)."""

CAMERA_NAMES: tuple[str, ...] = tuple(CAMERAS)
CAMERA_POSITION_JITTER = 0.02
"""Std-dev (m) of the per-episode camera position noise."""
CAMERA_ROTATION_JITTER_DEG = 1.5
"""Std-dev (deg) of the per-episode camera rotation noise (about a random axis)."""

# --- Rendering ---------------------------------------------------------------------------------
DEPTH_TOLERANCE = 0.01
"""Base tolerance (m) of the visibility depth test |z_point - depth(pixel)|."""
DEPTH_TOLERANCE_PER_PIXEL = 0.5
"""Plus this many pixels' worth of depth change along the surface at the point's slope."""
DEPTH_SLOPE_CAP = 1.0
"""Cap on the surface slope factor |tan(angle between normal and viewing ray)|."""
DEPTH_NORMAL_MIN_COS = 0.3
"""The surface seen at a point's pixel must be within 60 degrees of the point's own normal."""

ROBOT_POSITION_BOUNDS: tuple[tuple[float, float], ...] = (
    (-2.9, 2.9),
    (-1.8, 1.8),
    (-2.9, 2.9),
    (-3.1, 0.0),
    (-2.9, 2.9),
    (0.0, 3.8),
    (-2.9, 2.9),
    (0.0, 0.04),
    (0.0, 0.04),
)
"""FrankaKitchen-v1's robot position bounds (franka_config.xml ``pos_bound``), used to clip
the position-servo targets of the action interface."""
