"""Dataset clips as the flow evaluation needs them: first observation, instruction, camera and
ground-truth flow, in numpy.

The evaluation reads every record of a dataset folder (``jflow gen-kitchen`` output) once and
keeps what the metrics and baselines use (videos are dropped). Points are in the world frame
(meters); ``grid`` is the unnormalised grid-layout flow ``[T, h, w, 4]`` (pixels ``x, y``,
camera depth in meters, visibility 0/1) in the dataset's grid order (``jflow.flow.grid``).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from jaxtyping import Bool, Float, UInt8

from jflow.errors import DataError, ShapeError
from jflow.flow.records import FlowClip
from jflow.geometry.camera import PinholeIntrinsics


@dataclasses.dataclass(frozen=True)
class EvalClip:
    """One dataset episode for evaluation (numpy arrays; world frame; meters)."""

    index: int
    """The record's position in its dataset (manifest index order)."""
    task_id: str
    instruction: str
    seed: int
    rgb: UInt8[np.ndarray, "H W 3"]
    depth: Float[np.ndarray, "H W"]
    intrinsics: PinholeIntrinsics
    world_from_camera: Float[np.ndarray, "4 4"]
    """The camera pose as a homogeneous matrix (OpenCV camera frame)."""
    points: Float[np.ndarray, "T N 3"]
    """Ground-truth points in the world frame (meters), grid order."""
    visible: Bool[np.ndarray, "T N"]
    grid: Float[np.ndarray, "T h w 4"]
    """The unnormalised grid flow: pixel x, y, camera depth (m), visibility (0/1)."""

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    def to_camera(self, points_world: Float[np.ndarray, "*B 3"]) -> Float[np.ndarray, "*B 3"]:
        """World points to this clip's camera frame (OpenCV)."""
        rotation = self.world_from_camera[:3, :3]
        return (np.asarray(points_world, np.float64) - self.world_from_camera[:3, 3]) @ rotation

    def to_world(self, points_camera: Float[np.ndarray, "*B 3"]) -> Float[np.ndarray, "*B 3"]:
        """Camera-frame points of this clip to the world frame."""
        rotation = self.world_from_camera[:3, :3]
        return np.asarray(points_camera, np.float64) @ rotation.T + self.world_from_camera[:3, 3]

    @property
    def points_camera(self) -> Float[np.ndarray, "T N 3"]:
        return self.to_camera(self.points)


def eval_clip_from_record(
    record: dict[str, np.ndarray], index: int, grid_hw: tuple[int, int], seed: int = -1
) -> EvalClip:
    """An :class:`EvalClip` from a stored record (``FlowClip.to_arrays`` layout) whose points
    are in grid order on a ``grid_hw`` grid."""
    import jaxlie

    clip = FlowClip.from_arrays(record).validate()
    t, n = clip.flow.points.shape[:2]
    gh, gw = grid_hw
    if n != gh * gw:
        raise ShapeError(f"record {index} has {n} flow points, the dataset's grid is {gh}x{gw}")
    pose = jaxlie.SE3(wxyz_xyz=np.asarray(record["camera_pose"], np.float64))
    world_from_camera = np.asarray(pose.as_matrix(), np.float64)
    points = np.asarray(clip.flow.points, np.float64)
    if clip.flow.frame == "camera":
        rotation, translation = world_from_camera[:3, :3], world_from_camera[:3, 3]
        points = points @ rotation.T + translation
    flow = clip.flow.numpy()
    grid_values = np.concatenate(
        [flow.tracks, flow.depth[..., None], flow.visible[..., None].astype(np.float32)], axis=-1
    )
    depth = np.asarray(clip.depth, np.float32)
    if not np.all(np.isfinite(depth)):
        raise DataError(f"record {index} ({clip.task_id}): its first depth frame holds NaN or inf")
    return EvalClip(
        index=index,
        task_id=clip.task_id,
        instruction=clip.instruction,
        seed=int(record["seed"]) if "seed" in record else seed,
        rgb=np.asarray(clip.rgb, np.uint8),
        depth=depth,
        intrinsics=clip.intrinsics,
        world_from_camera=world_from_camera,
        points=points,
        visible=np.asarray(flow.visible, bool),
        grid=grid_values.reshape(t, gh, gw, 4).astype(np.float32),
    )


def load_eval_clips(
    dataset_dir: str | os.PathLike, limit: int | None = None
) -> tuple[list[EvalClip], dict]:
    """Every record of a dataset folder as :class:`EvalClip` (the first ``limit`` when given),
    and the dataset's manifest. Raises :class:`DataError` when the folder is not a flow dataset."""
    from jflow.data.shards import ShardedDataSource

    source = ShardedDataSource(dataset_dir)
    manifest = source.manifest
    missing = [k for k in ("frames", "grid", "normalization") if k not in manifest]
    if missing:
        raise DataError(
            f"{dataset_dir}/manifest.json lacks {', '.join(missing)}: not a flow dataset "
            "(make one with jflow gen-kitchen)"
        )
    if len(source) == 0:
        raise DataError(f"dataset {dataset_dir} holds no records")
    grid_hw = (int(manifest["grid"][0]), int(manifest["grid"][1]))
    count = len(source) if limit is None else min(limit, len(source))
    clips = []
    for i in range(count):
        try:
            seed = int(source.metadata(i).get("seed", -1))
            clips.append(eval_clip_from_record(source[i], i, grid_hw, seed=seed))
        except (DataError, ShapeError) as err:
            raise type(err)(f"{dataset_dir}: {err}") from err
    return clips, manifest


__all__ = ["EvalClip", "eval_clip_from_record", "load_eval_clips"]
