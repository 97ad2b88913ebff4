"""Reading the videos that flow is extracted from: an mp4 (or any OpenCV video) or an .npz.

An .npz may hold (names in order of preference):

| what | keys | layout |
| --- | --- | --- |
| frames (required) | ``rgb``, ``frames``, ``video`` | ``[T, H, W, 3]`` uint8 RGB |
| depth | ``depth_m``, ``depth`` | ``[T, H, W]`` meters (metric) |
| relative depth | ``relative_depth`` | ``[T, H, W]``, aligned to ``reference_depth`` |
| reference depth | ``reference_depth`` | ``[H, W]`` metric depth of frame 0 |
| object mask | ``object_mask`` | ``[H, W]`` or ``[T, H, W]`` (frame 0 is used), nonzero = object |
| gripper mask | ``gripper_mask``, ``hand_mask`` | ``[H, W]`` or ``[T, H, W]`` (frame 0), nonzero = gripper |
| intrinsics | ``intrinsics`` | ``[fx, fy, cx, cy]`` pixels |
| camera pose | ``camera_pose`` | ``world_from_camera`` as ``wxyz_xyz`` |
| instruction | ``instruction`` | string |

An mp4's instruction is read from a ``.txt`` of the same name when there is one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from jflow.errors import DataError, ShapeError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclasses.dataclass(frozen=True)
class VideoData:
    """Frames and whatever else a file holds for flow extraction (``None`` when absent)."""

    frames: UInt8[np.ndarray, "T H W 3"]
    depth: Float[np.ndarray, "T H W"] | None = None
    relative_depth: Float[np.ndarray, "T H W"] | None = None
    reference_depth: Float[np.ndarray, "H W"] | None = None
    object_mask: np.ndarray | None = None
    gripper_mask: np.ndarray | None = None
    intrinsics: Float[np.ndarray, " 4"] | None = None
    camera_pose: Float[np.ndarray, " 7"] | None = None
    instruction: str = ""
    name: str = ""


def read_mp4(path: str | Path) -> UInt8[np.ndarray, "T H W 3"]:
    """Decode every frame of a video file with OpenCV, as RGB uint8 ``[T, H, W, 3]``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"OpenCV cannot open the video {path}")
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise DataError(f"no frame could be decoded from {path} (not a video, or corrupt)")
    return np.stack(frames)


def _first_frame_mask(mask: np.ndarray | None, hw: tuple[int, int], key: str, path: Path):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[0]
    if mask.shape != hw:
        raise ShapeError(
            f"{path}: {key} must be [H, W] or [T, H, W] with H, W = {hw}, got {mask.shape}"
        )
    return mask > 0


def read_npz(path: str | Path) -> VideoData:
    """Read an .npz with the keys of the module docstring; checks that shapes agree."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path} as an .npz archive: {err}") from err

    def first(*keys):
        return next((arrays[k] for k in keys if k in arrays), None)

    frames = first("rgb", "frames", "video")
    if frames is None:
        raise DataError(f"{path} holds no frames: expected one of the keys rgb, frames, video")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ShapeError(
            f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    t_len, h, w = frames.shape[:3]
    out = {}
    for name, keys in (("depth", ("depth_m", "depth")), ("relative_depth", ("relative_depth",))):
        value = first(*keys)
        if value is not None:
            value = np.asarray(value, np.float32)
            if value.shape != (t_len, h, w):
                raise ShapeError(
                    f"{path}: {name} must be [T, H, W] = {(t_len, h, w)}, got {value.shape}"
                )
        out[name] = value
    ref = first("reference_depth")
    if ref is not None and np.shape(ref) != (h, w):
        raise ShapeError(f"{path}: reference_depth must be [H, W] = {(h, w)}, got {np.shape(ref)}")
    instruction = first("instruction")
    return VideoData(
        frames=frames,
        depth=out["depth"],
        relative_depth=out["relative_depth"],
        reference_depth=None if ref is None else np.asarray(ref, np.float32),
        object_mask=_first_frame_mask(first("object_mask"), (h, w), "object_mask", path),
        gripper_mask=_first_frame_mask(
            first("gripper_mask", "hand_mask"), (h, w), "gripper_mask", path
        ),
        intrinsics=None
        if "intrinsics" not in arrays
        else np.asarray(arrays["intrinsics"], np.float64),
        camera_pose=None
        if "camera_pose" not in arrays
        else np.asarray(arrays["camera_pose"], np.float64),
        instruction="" if instruction is None else str(instruction),
        name=path.stem,
    )


def read_video_file(path: str | Path) -> VideoData:
    """Read an .npz (:func:`read_npz`) or a video file (:func:`read_mp4`) by its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path)
    if suffix in VIDEO_SUFFIXES:
        frames = read_mp4(path)
        txt = path.with_suffix(".txt")
        instruction = txt.read_text().strip() if txt.is_file() else ""
        return VideoData(frames=frames, instruction=instruction, name=path.stem)
    raise DataError(
        f"cannot extract flow from {path}: expected an .npz or a video file ({', '.join(VIDEO_SUFFIXES)})"
    )


__all__ = ["VIDEO_SUFFIXES", "VideoData", "read_mp4", "read_npz", "read_video_file"]
