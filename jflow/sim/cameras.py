"""Kitchen cameras: intrinsics from the MuJoCo camera, OpenCV world_from_camera poses, jitter.

MuJoCo cameras look along -z with +y up; jflow's camera frame is OpenCV's (x right, y down,
z forward), so ``world_from_camera = world_from_mujoco_camera @ OPENCV_FROM_MUJOCO_CAMERA^-1``
(:data:`jflow.geometry.camera.OPENCV_FROM_MUJOCO_CAMERA`).
"""

from __future__ import annotations

import jax.numpy as jnp
import jaxlie
import mujoco
import numpy as np

from jflow.errors import ConfigError, UnknownNameError
from jflow.geometry.camera import OPENCV_FROM_MUJOCO_CAMERA, PinholeIntrinsics
from jflow.sim import kitchen_constants as kc

_OPENCV_FROM_MUJOCO = np.diag([1.0, -1.0, -1.0])


def _camera_id(model: mujoco.MjModel, name: str) -> int:
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    if cam < 0:
        known = [model.camera(i).name for i in range(model.ncam)]
        raise UnknownNameError("camera", name, known)
    return int(cam)


def check_resolution(width: int, height: int | None = None) -> tuple[int, int]:
    """Validate an image size: positive multiples of 8. Returns ``(width, height)``."""
    height = width if height is None else height
    for value in (width, height):
        if not isinstance(value, (int, np.integer)) or value <= 0 or value % 8:
            raise ConfigError(
                f"image width and height must be positive multiples of 8, got {width}x{height}"
            )
    return int(width), int(height)


def camera_intrinsics(
    model: mujoco.MjModel, name: str, width: int, height: int | None = None
) -> PinholeIntrinsics:
    """Pinhole intrinsics of MuJoCo camera ``name`` rendered at ``width`` x ``height`` pixels.

    MuJoCo's ``fovy`` is the vertical field of view with square pixels and a centred principal
    point, so ``fy = fx = (H / 2) / tan(fovy / 2)`` and ``(cx, cy) = (W / 2, H / 2)``.
    """
    width, height = check_resolution(width, height)
    cam = _camera_id(model, name)
    return PinholeIntrinsics.from_fovy(float(model.cam_fovy[cam]), width, height)


def camera_pose_matrix(data: mujoco.MjData, cam: int) -> np.ndarray:
    """4x4 world_from_camera (OpenCV convention) of camera id ``cam`` from ``data``'s kinematics."""
    out = np.eye(4)
    out[:3, :3] = data.cam_xmat[cam].reshape(3, 3) @ _OPENCV_FROM_MUJOCO
    out[:3, 3] = data.cam_xpos[cam]
    return out


def camera_pose(model: mujoco.MjModel, data: mujoco.MjData, name: str) -> jaxlie.SE3:
    """world_from_camera (OpenCV camera frame) of camera ``name``; needs ``mj_kinematics`` done."""
    cam = _camera_id(model, name)
    world_from_mujoco = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(jnp.asarray(data.cam_xmat[cam].reshape(3, 3))),
        jnp.asarray(data.cam_xpos[cam]),
    )
    return world_from_mujoco @ OPENCV_FROM_MUJOCO_CAMERA.inverse()


def jitter_camera(
    model: mujoco.MjModel,
    name: str,
    rng: np.random.Generator,
    position_std: float = kc.CAMERA_POSITION_JITTER,
    rotation_std_deg: float = kc.CAMERA_ROTATION_JITTER_DEG,
) -> None:
    """Reset camera ``name`` of ``model`` to its nominal pose, then perturb it (in place)."""
    cam = _camera_id(model, name)
    spec = kc.CAMERAS.get(name)
    if spec is None:
        raise UnknownNameError("camera", name, kc.CAMERA_NAMES)
    from jflow.sim.model import lookat_quat  # noqa: PLC0415 (avoid an import cycle)

    quat = lookat_quat(spec.position, spec.target)
    pos = np.asarray(spec.position, np.float64)
    if position_std > 0 or rotation_std_deg > 0:
        pos = pos + rng.normal(0.0, position_std, 3)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.normal(0.0, rotation_std_deg))
        dq = np.zeros(4)
        mujoco.mju_axisAngle2Quat(dq, axis, angle)
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, dq, quat)  # rotate about a world-frame axis
        quat = out
    model.cam_pos[cam] = pos
    model.cam_quat[cam] = quat
