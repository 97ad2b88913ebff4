"""Load gymnasium-robotics' Franka Kitchen model and edit it for jflow with ``mujoco.MjSpec``.

The model file shipped inside the installed ``gymnasium_robotics`` package is read (no network),
and at load time jflow

* adds the fixed cameras of :data:`jflow.sim.kitchen_constants.CAMERAS`;
* adds one procedural cube texture and material per object of
  :data:`~jflow.sim.kitchen_constants.TEXTURED_OBJECTS` (their pixels are re-randomised per
  episode by :class:`jflow.sim.rendering.KitchenRenderer`);
* turns multi-sampling off (exact segmentation) and makes the shadow map small (speed);
* moves the robot's visual geoms to geom group ``ROBOT_GEOM_GROUP`` so renders can hide it.

:func:`load_kitchen` caches the compiled model per :class:`KitchenModelConfig`; the cached model
is never mutated: :class:`KitchenModel.copy` gives a private copy for anything that edits it
(lights, camera jitter, textures).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from pathlib import Path

import mujoco
import numpy as np

from jflow.errors import SimulationError, UnknownNameError
from jflow.sim import kitchen_constants as kc


def kitchen_model_path() -> Path:
    """The installed FrankaKitchen-v1 model file."""
    try:
        import gymnasium_robotics  # noqa: PLC0415 (heavy import, only when needed)
    except ImportError as exc:  # pragma: no cover - a dependency
        raise SimulationError(
            "gymnasium-robotics is not installed; pip install gymnasium-robotics==1.4.2"
        ) from exc
    path = Path(os.path.dirname(gymnasium_robotics.__file__)) / kc.MODEL_RELPATH
    if not path.is_file():
        raise SimulationError(f"the Franka Kitchen model file is missing: {path}")
    return path


def lookat_quat(position, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """MuJoCo camera quaternion (wxyz) for a camera at ``position`` looking at ``target``.

    MuJoCo cameras look along their -z axis with +y up.
    """
    position = np.asarray(position, np.float64)
    forward = np.asarray(target, np.float64) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, np.float64))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    rot = np.stack([right, cam_up, -forward], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.reshape(-1))
    return quat


@dataclasses.dataclass(frozen=True)
class KitchenModelConfig:
    """What changes the compiled model. ``texture_size``: side of each procedural texture face."""

    texture_size: int = 64
    shadow_size: int = 1024


@dataclasses.dataclass
class KitchenModel:
    """A compiled kitchen model and the index tables jflow needs.

    Attributes:
      model: the ``mujoco.MjModel``.
      geom_segmentation: ``[ngeom]`` int32, the segmentation id
        (:data:`~jflow.sim.kitchen_constants.SEGMENTATION_IDS`) of every geom.
      visual_geoms: segmentation object name -> ids of its rendered (group < 3, opaque) geoms.
      texture_ids: textured object name -> its procedural texture id.
      joint_qpos: joint name -> slice of ``qpos`` it owns.
    """

    model: mujoco.MjModel
    geom_segmentation: np.ndarray
    visual_geoms: dict[str, tuple[int, ...]]
    texture_ids: dict[str, int]
    joint_qpos: dict[str, slice]
    config: KitchenModelConfig

    def copy(self) -> KitchenModel:
        """A copy whose ``model`` may be mutated without touching the cached one."""
        return dataclasses.replace(self, model=copy.deepcopy(self.model))

    def qpos_indices(self, joints: tuple[str, ...]) -> np.ndarray:
        """The qpos indices of ``joints``, concatenated."""
        out: list[int] = []
        for name in joints:
            if name not in self.joint_qpos:
                raise UnknownNameError("joint", name, sorted(self.joint_qpos))
            sl = self.joint_qpos[name]
            out.extend(range(sl.start, sl.stop))
        return np.asarray(out, np.int64)

    def camera_id(self, name: str) -> int:
        cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam < 0 or name not in kc.CAMERAS:
            raise UnknownNameError("camera", name, kc.CAMERA_NAMES)
        return int(cam)

    def body_id(self, name: str) -> int:
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        if body < 0:
            raise UnknownNameError(
                "body", name, [self.model.body(i).name for i in range(self.model.nbody)]
            )
        return int(body)

    def site_id(self, name: str) -> int:
        site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, name)
        if site < 0:
            raise UnknownNameError(
                "site", name, [self.model.site(i).name for i in range(self.model.nsite)]
            )
        return int(site)


def _build_spec(config: KitchenModelConfig) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(kitchen_model_path()))
    for cam in kc.CAMERAS.values():
        c = spec.worldbody.add_camera()
        c.name = cam.name
        c.pos = list(cam.position)
        c.quat = list(lookat_quat(cam.position, cam.target))
        c.fovy = float(cam.fovy)
    spec.visual.quality.offsamples = 0
    spec.visual.quality.shadowsize = int(config.shadow_size)
    for obj in kc.TEXTURED_OBJECTS:
        tex = spec.add_texture()
        tex.name = f"jflow_tex_{obj}"
        tex.type = mujoco.mjtTexture.mjTEXTURE_CUBE
        tex.builtin = mujoco.mjtBuiltin.mjBUILTIN_CHECKER
        tex.width = int(config.texture_size)
        tex.height = int(config.texture_size)
        tex.rgb1 = [0.8, 0.3, 0.2]
        tex.rgb2 = [0.2, 0.5, 0.8]
        mat = spec.add_material()
        mat.name = f"jflow_mat_{obj}"
        textures = [""] * int(mujoco.mjtTextureRole.mjNTEXROLE)
        textures[int(mujoco.mjtTextureRole.mjTEXROLE_RGB)] = tex.name
        mat.textures = textures
        mat.texuniform = False
        mat.texrepeat = [6.0, 6.0]
        mat.rgba = [1.0, 1.0, 1.0, 1.0]
        mat.specular = 0.2
        mat.shininess = 0.2
    return spec


def _robot_bodies(model: mujoco.MjModel) -> set[int]:
    base = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, kc.ROBOT_BASE_BODY)
    root = int(model.body_rootid[base])
    return {b for b in range(model.nbody) if int(model.body_rootid[b]) == root}


def _is_opaque_visual(model: mujoco.MjModel, geom: int) -> bool:
    if int(model.geom_group[geom]) >= 3:
        return False
    mat = int(model.geom_matid[geom])
    alpha = float(model.mat_rgba[mat][3]) if mat >= 0 else float(model.geom_rgba[geom][3])
    return alpha >= 0.5 and float(model.geom_rgba[geom][3]) > 0.0


@functools.lru_cache(maxsize=4)
def _load_cached(config: KitchenModelConfig) -> KitchenModel:
    try:
        model = _build_spec(config).compile()
    except Exception as exc:  # mujoco raises ValueError with the compiler's message
        raise SimulationError(f"could not compile the Franka Kitchen model: {exc}") from exc

    robot = _robot_bodies(model)
    gripper_bodies = {
        mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in kc.GRIPPER_BODIES
    }
    gripper_meshes = {
        mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MESH, m) for m in kc.GRIPPER_MESHES
    }
    seg = np.zeros(model.ngeom, np.int32)
    visual: dict[str, list[int]] = {name: [] for name in kc.SEGMENTATION_OBJECTS}
    for g in range(model.ngeom):
        body = int(model.geom_bodyid[g])
        if body in robot:
            is_gripper = body in gripper_bodies or (
                int(model.geom_type[g]) == mujoco.mjtGeom.mjGEOM_MESH
                and int(model.geom_dataid[g]) in gripper_meshes
            )
            name = "gripper" if is_gripper else "robot"
            if int(model.geom_group[g]) < 3:
                model.geom_group[g] = kc.ROBOT_GEOM_GROUP
        else:
            body_name = model.body(body).name
            name = kc.BODY_TO_OBJECT.get(body_name, "")
            if not name:
                raise SimulationError(
                    f"kitchen body {body_name!r} has geoms but no segmentation object"
                )
        seg[g] = kc.SEGMENTATION_IDS[name]
        if _is_opaque_visual(model, g):
            visual[name].append(g)

    texture_ids: dict[str, int] = {}
    for obj in kc.TEXTURED_OBJECTS:
        texture_ids[obj] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_TEXTURE, f"jflow_tex_{obj}")
        mat = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, f"jflow_mat_{obj}")
        for g in visual[obj]:
            model.geom_matid[g] = mat

    joint_qpos: dict[str, slice] = {}
    for j in range(model.njnt):
        adr = int(model.jnt_qposadr[j])
        size = {0: 7, 1: 4}.get(int(model.jnt_type[j]), 1)
        joint_qpos[model.joint(j).name] = slice(adr, adr + size)

    return KitchenModel(
        model=model,
        geom_segmentation=seg,
        visual_geoms={k: tuple(v) for k, v in visual.items()},
        texture_ids=texture_ids,
        joint_qpos=joint_qpos,
        config=config,
    )


def load_kitchen(config: KitchenModelConfig | None = None) -> KitchenModel:
    """The compiled, edited kitchen (cached per config; do not mutate: use ``.copy()``)."""
    return _load_cached(config or KitchenModelConfig())


def home_qpos(kitchen: KitchenModel) -> np.ndarray:
    """The model keyframe's qpos (robot at home, every object closed, kettle bottom-left)."""
    qpos = np.array(kitchen.model.key_qpos[0], np.float64)
    qpos[kitchen.joint_qpos["kettle"]] = kc.KETTLE_HOME_QPOS
    return qpos
