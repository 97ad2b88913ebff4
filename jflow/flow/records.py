"""The flow data model: :class:`ObjectFlow` (a pytree) and :class:`FlowClip` (a record).

Layouts (docs/conventions.md): points ``[T, N, 3]`` in meters, visibility ``[T, N]``, pixel tracks
``[T, N, 2]`` as ``(x, y)``, per-point camera depth ``[T, N]`` in meters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import jax_dataclasses as jdc
import jaxlie
import numpy as np
from jaxtyping import Array, Bool, Float, UInt8

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.geometry.camera import PinholeIntrinsics
from jflow.geometry.transforms import transform_points

FRAMES = ("camera", "world")


@jdc.pytree_dataclass
class ObjectFlow:
    """3D flow of N points of one object over T frames.

    ``frame`` names the frame the points are expressed in: ``"camera"`` (OpenCV camera frame of
    the clip's camera) or ``"world"``. ``tracks`` and ``depth`` always refer to the clip's camera.
    """

    points: Float[Array, "T N 3"]
    visible: Bool[Array, "T N"]
    tracks: Float[Array, "T N 2"]
    depth: Float[Array, "T N"]
    frame: jdc.Static[str] = "camera"

    @property
    def num_frames(self) -> int:
        return self.points.shape[0]

    @property
    def num_points(self) -> int:
        return self.points.shape[1]

    def validate(self) -> ObjectFlow:
        """Check shapes, dtypes and finiteness; raise :class:`ShapeError` / :class:`DataError`."""
        if self.frame not in FRAMES:
            raise ConfigError(f"ObjectFlow.frame must be one of {FRAMES}, got {self.frame!r}")
        pts = np.asarray(self.points)
        if pts.ndim != 3 or pts.shape[-1] != 3:
            raise ShapeError(f"ObjectFlow.points must be [T, N, 3], got shape {pts.shape}")
        t, n = pts.shape[:2]
        for name, arr, shape in (
            ("visible", self.visible, (t, n)),
            ("tracks", self.tracks, (t, n, 2)),
            ("depth", self.depth, (t, n)),
        ):
            if tuple(np.shape(arr)) != shape:
                raise ShapeError(
                    f"ObjectFlow.{name} must have shape {shape} to match points {pts.shape}, "
                    f"got {tuple(np.shape(arr))}"
                )
        if np.asarray(self.visible).dtype != np.bool_:
            raise ShapeError(
                f"ObjectFlow.visible must be bool, got {np.asarray(self.visible).dtype}"
            )
        for name in ("points", "tracks", "depth"):
            if not np.all(np.isfinite(np.asarray(getattr(self, name)))):
                raise DataError(f"ObjectFlow.{name} contains NaN or inf")
        return self

    def transformed(self, new_from_current: jaxlie.SE3, frame: str) -> ObjectFlow:
        """The same flow with its points mapped by ``new_from_current`` into ``frame``."""
        if frame not in FRAMES:
            raise ConfigError(f"frame must be one of {FRAMES}, got {frame!r}")
        return dataclasses.replace(
            self, points=transform_points(new_from_current, self.points), frame=frame
        )

    def to_world(self, world_from_camera: jaxlie.SE3) -> ObjectFlow:
        if self.frame == "world":
            return self
        return self.transformed(world_from_camera, "world")

    def to_camera(self, world_from_camera: jaxlie.SE3) -> ObjectFlow:
        if self.frame == "camera":
            return self
        return self.transformed(world_from_camera.inverse(), "camera")

    def take_points(self, index: Any) -> ObjectFlow:
        """Select points (an index or boolean mask over N) in every frame."""
        return dataclasses.replace(
            self,
            points=self.points[:, index],
            visible=self.visible[:, index],
            tracks=self.tracks[:, index],
            depth=self.depth[:, index],
        )

    def take_frames(self, index: Any) -> ObjectFlow:
        """Select frames (an index, slice or boolean mask over T)."""
        return dataclasses.replace(
            self,
            points=self.points[index],
            visible=self.visible[index],
            tracks=self.tracks[index],
            depth=self.depth[index],
        )

    def numpy(self) -> ObjectFlow:
        return jdc.replace(
            self,
            points=np.asarray(self.points, np.float32),
            visible=np.asarray(self.visible, bool),
            tracks=np.asarray(self.tracks, np.float32),
            depth=np.asarray(self.depth, np.float32),
        )


def pose_to_array(pose: jaxlie.SE3) -> np.ndarray:
    return np.asarray(pose.wxyz_xyz, np.float64)


def pose_from_array(array: np.ndarray) -> jaxlie.SE3:
    array = np.asarray(array)
    if array.shape[-1] != 7:
        raise ShapeError(f"a pose is stored as wxyz_xyz with 7 numbers, got shape {array.shape}")
    return jaxlie.SE3(wxyz_xyz=jnp.asarray(array))


@dataclasses.dataclass(frozen=True)
class FlowClip:
    """One training example: the first observation, the instruction, and the object's flow.

    ``camera_pose`` is ``world_from_camera`` (OpenCV camera frame). ``video`` ``[T, H, W, 3]`` and
    ``depth_video`` ``[T, H, W]`` are optional: datasets store them so that trackers can be run
    and judged on the same clip; models never need them.
    """

    rgb: UInt8[np.ndarray, "H W 3"]
    depth: Float[np.ndarray, "H W"]
    intrinsics: PinholeIntrinsics
    camera_pose: jaxlie.SE3
    object_mask: Bool[np.ndarray, "H W"]
    instruction: str
    task_id: str
    flow: ObjectFlow
    video: UInt8[np.ndarray, "T H W 3"] | None = None
    depth_video: Float[np.ndarray, "T H W"] | None = None
    camera_name: str = ""

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def validate(self) -> FlowClip:
        """Check that every field has the documented shape and the arrays agree."""
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise ShapeError(f"FlowClip.rgb must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
        hw = rgb.shape[:2]
        if tuple(np.shape(self.depth)) != hw:
            raise ShapeError(f"FlowClip.depth must be [H, W] = {hw}, got {np.shape(self.depth)}")
        if tuple(np.shape(self.object_mask)) != hw:
            raise ShapeError(
                f"FlowClip.object_mask must be [H, W] = {hw}, got {np.shape(self.object_mask)}"
            )
        if (self.intrinsics.height, self.intrinsics.width) != hw:
            raise ShapeError(
                f"intrinsics are for {self.intrinsics.width}x{self.intrinsics.height} images, "
                f"but the frame is {hw[1]}x{hw[0]}"
            )
        self.flow.validate()
        t = self.flow.num_frames
        if self.video is not None and tuple(np.shape(self.video)) != (t, *hw, 3):
            raise ShapeError(
                f"FlowClip.video must be [{t}, {hw[0]}, {hw[1]}, 3], got {np.shape(self.video)}"
            )
        if self.depth_video is not None and tuple(np.shape(self.depth_video)) != (t, *hw):
            raise ShapeError(
                f"FlowClip.depth_video must be [{t}, {hw[0]}, {hw[1]}], got {np.shape(self.depth_video)}"
            )
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """A flat dict of numpy arrays (strings as 0-d unicode arrays): the on-disk form."""
        k = self.intrinsics
        out: dict[str, np.ndarray] = {
            "rgb": np.asarray(self.rgb, np.uint8),
            "depth": np.asarray(self.depth, np.float32),
            "intrinsics": np.asarray([k.fx, k.fy, k.cx, k.cy], np.float64),
            "image_size": np.asarray([k.width, k.height], np.int64),
            "camera_pose": pose_to_array(self.camera_pose),
            "object_mask": np.asarray(self.object_mask, bool),
            "instruction": np.asarray(self.instruction),
            "task_id": np.asarray(self.task_id),
            "camera_name": np.asarray(self.camera_name),
            "flow_points": np.asarray(self.flow.points, np.float32),
            "flow_visible": np.asarray(self.flow.visible, bool),
            "flow_tracks": np.asarray(self.flow.tracks, np.float32),
            "flow_depth": np.asarray(self.flow.depth, np.float32),
            "flow_frame": np.asarray(self.flow.frame),
        }
        if self.video is not None:
            out["video"] = np.asarray(self.video, np.uint8)
        if self.depth_video is not None:
            out["depth_video"] = np.asarray(self.depth_video, np.float32)
        return out

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> FlowClip:
        """Inverse of :meth:`to_arrays`; raises :class:`DataError` naming a missing key."""
        required = (
            "rgb depth intrinsics image_size camera_pose object_mask instruction task_id "
            "flow_points flow_visible flow_tracks flow_depth flow_frame"
        ).split()
        missing = [key for key in required if key not in arrays]
        if missing:
            raise DataError(f"a FlowClip record is missing the fields: {', '.join(missing)}")
        fx, fy, cx, cy = np.asarray(arrays["intrinsics"], np.float32)
        width, height = (int(v) for v in arrays["image_size"])
        intrinsics = PinholeIntrinsics(
            fx=np.float32(fx),
            fy=np.float32(fy),
            cx=np.float32(cx),
            cy=np.float32(cy),
            width=width,
            height=height,
        )
        flow = ObjectFlow(
            points=np.asarray(arrays["flow_points"]),
            visible=np.asarray(arrays["flow_visible"]),
            tracks=np.asarray(arrays["flow_tracks"]),
            depth=np.asarray(arrays["flow_depth"]),
            frame=str(arrays["flow_frame"]),
        )
        return FlowClip(
            rgb=np.asarray(arrays["rgb"]),
            depth=np.asarray(arrays["depth"]),
            intrinsics=intrinsics,
            camera_pose=pose_from_array(arrays["camera_pose"]),
            object_mask=np.asarray(arrays["object_mask"]),
            instruction=str(arrays["instruction"]),
            task_id=str(arrays["task_id"]),
            flow=flow,
            video=np.asarray(arrays["video"]) if "video" in arrays else None,
            depth_video=np.asarray(arrays["depth_video"]) if "depth_video" in arrays else None,
            camera_name=str(arrays["camera_name"]) if "camera_name" in arrays else "",
        )
