"""Videos of executed rollouts: render the states a rollout went through and write an mp4.

Frames are rendered with :class:`jflow.sim.rendering.KitchenRenderer` (robot shown) from one of
the kitchen cameras; :func:`write_mp4` encodes ``uint8 [F, H, W, 3]`` RGB frames with OpenCV's
``mp4v`` codec. Needs an OpenGL backend (``MUJOCO_GL=egl`` before MuJoCo is imported).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import mujoco
import numpy as np
from jaxtyping import UInt8

from jflow.errors import ConfigError, OutputError, UnknownNameError
from jflow.sim import kitchen_constants as kc
from jflow.sim.env import KitchenState
from jflow.sim.model import load_kitchen
from jflow.sim.rendering import KitchenRenderer


def render_rollout(
    states: Sequence[KitchenState],
    *,
    camera: str = "front",
    resolution: int = 256,
    stride: int = 1,
    renderer: KitchenRenderer | None = None,
) -> UInt8[np.ndarray, "F H W 3"]:
    """RGB frames of every ``stride``-th state (and the last) seen from ``camera``.

    ``renderer`` (optional) is reused, else one is made at ``resolution`` x ``resolution`` and
    closed afterwards. The kitchen keeps its default textures (no per-episode randomisation).
    """
    if camera not in kc.CAMERAS:
        raise UnknownNameError("camera", camera, kc.CAMERA_NAMES)
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ConfigError(f"stride must be a positive integer, got {stride!r}")
    if len(states) == 0:
        raise ConfigError("no states to render")
    own = renderer is None
    r = KitchenRenderer(load_kitchen(), resolution) if own else renderer
    try:
        data = mujoco.MjData(r.model)
        keep = list(range(0, len(states), stride))
        if keep[-1] != len(states) - 1:
            keep.append(len(states) - 1)
        frames = np.zeros((len(keep), r.height, r.width, 3), np.uint8)
        for i, k in enumerate(keep):
            data.qpos[:] = states[k].qpos
            mujoco.mj_kinematics(r.model, data)
            mujoco.mj_camlight(r.model, data)
            frames[i] = r.render(data, camera, show_robot=True)[0]
    finally:
        if own:
            r.close()
    return frames


def write_mp4(
    frames: UInt8[np.ndarray, "F H W 3"], path: str | Path, fps: float = 1.0 / kc.ENV_DT
) -> Path:
    """Write RGB frames to an mp4 file (``mp4v``); returns the path. Default ``fps`` is the env's
    control rate (12.5 Hz: real time for stride 1)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ConfigError(f"frames must be uint8 [F, H, W, 3] with F >= 1, got {frames.shape}")
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder for {path}: {exc}") from exc
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise OutputError(f"OpenCV cannot open {path} for writing an mp4 video")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not path.is_file() or path.stat().st_size == 0:
        raise OutputError(f"OpenCV wrote no video to {path}")
    return path
