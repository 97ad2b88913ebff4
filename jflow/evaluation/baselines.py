"""Baselines for 3D flow prediction, applied to a held-out clip's own (known) initial points.

All three predict world-frame points ``[T, N, 3]`` (meters) in the clip's grid order:

- **zero motion**: every point stays where it is, ``p_t = p_0``;
- **mean flow**: the mean displacement of each grid cell over the training clips of the same
  task, ``p_t = p_0 + R (mean_k d^k_t)`` with ``d^k_t = c^k_t - c^k_0`` the displacement of
  training clip ``k`` in *its own camera frame* (OpenCV) and ``R`` the held-out clip's camera
  rotation (camera to world). Displacements are averaged in the 3D camera frame rather than in
  ``(u, v, depth)`` grid space because a 3D displacement does not depend on how far the object is
  from the camera, and the camera frame (rather than the world) keeps the baseline on the
  model's footing: the model sees the scene through the camera, whose pose jitters between
  episodes. Grid cells correspond across clips of a task because the grid order sorts the
  object's points by their first-frame pixel position (``jflow.flow.grid.grid_order``);
- **nearest neighbour**: the training clip closest in instruction first and first RGB-D frame
  second, its camera-frame displacement field transferred onto the held-out initial points in
  the same way. The candidates are the training clips whose instruction embedding has a cosine
  with the query's within ``text_tolerance`` of the best one (``e``: the mean-pooled,
  L2-normalised sentence embedding of the model's frozen text encoder; the same phrasing gives
  cosine 1, and the default tolerance 0.001 keeps in effect only the best phrasing); among them the clip with the smallest RMSE between first frames wins (the first
  such clip on ties). A first frame is compared downsampled (area averaging) to ``s x s`` with
  four channels: RGB in [0, 1] and depth in meters clipped to ``[0, max_depth]`` (the kitchen
  renders the background at the far plane, 333 m, which would otherwise swamp the distance).
  Instruction first, because a weighted sum of the two distances let the image term pick clips
  of other tasks (the scene barely changes between tasks; the words do): on the 64 held-out
  episodes of 16 tasks in runs/issue4 the sum ``(1 - cos) + rmse`` found a clip of the same
  task for 11 with unclipped depth and for 57 with clipped depth, this rule for all 64. MiniLM embeddings hardly separate left from right or on from
  off (cosines 0.86 to 0.9), so a looser tolerance mixes tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from jflow.errors import DataError, ShapeError
from jflow.evaluation.clips import EvalClip


def zero_motion(clip: EvalClip) -> Float[np.ndarray, "T N 3"]:
    """Every point stays at its first-frame position: ``p_t = p_0`` (world frame)."""
    return np.repeat(clip.points[:1], clip.num_frames, axis=0)


def camera_displacement(clip: EvalClip) -> Float[np.ndarray, "T N 3"]:
    """The ground-truth displacement ``c_t - c_0`` of every point in the clip's camera frame."""
    points = clip.points_camera
    return points - points[:1]


def transfer_displacement(
    clip: EvalClip, displacement_camera: Float[np.ndarray, "T N 3"]
) -> Float[np.ndarray, "T N 3"]:
    """World points of ``clip``'s initial points moved by a camera-frame displacement field."""
    disp = np.asarray(displacement_camera, np.float64)
    if disp.shape != clip.points.shape:
        raise ShapeError(
            f"a displacement field of shape {disp.shape} does not fit a clip of "
            f"{clip.points.shape[0]} frames and {clip.points.shape[1]} points"
        )
    return clip.to_world(clip.points_camera[:1] + disp)


class MeanFlowBaseline:
    """The mean camera-frame displacement of each grid cell over the training clips of a task."""

    def __init__(self, train_clips: Sequence[EvalClip]):
        if not train_clips:
            raise DataError("the mean-flow baseline needs at least one training clip")
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for clip in train_clips:
            disp = camera_displacement(clip)
            if clip.task_id in sums and sums[clip.task_id].shape != disp.shape:
                raise ShapeError(
                    f"training clips of task {clip.task_id!r} have different shapes: "
                    f"{sums[clip.task_id].shape} and {disp.shape}"
                )
            sums[clip.task_id] = sums.get(clip.task_id, 0.0) + disp
            counts[clip.task_id] = counts.get(clip.task_id, 0) + 1
        self.mean_displacement = {t: sums[t] / counts[t] for t in sums}
        """``{task_id: [T, N, 3]}`` mean camera-frame displacement (meters)."""
        self.counts = counts
        """Training clips per task."""

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.mean_displacement)

    def predict(self, clip: EvalClip) -> Float[np.ndarray, "T N 3"]:
        """World points: the clip's initial points moved by its task's mean displacement."""
        disp = self.mean_displacement.get(clip.task_id)
        if disp is None:
            raise DataError(
                f"task {clip.task_id!r} has no training clip, so it has no mean flow; "
                f"training tasks: {', '.join(self.tasks)}"
            )
        return transfer_displacement(clip, disp)


def image_features(
    rgb: UInt8[np.ndarray, "H W 3"],
    depth: Float[np.ndarray, "H W"],
    size: int,
    max_depth: float = 5.0,
) -> Float[np.ndarray, " F"]:
    """The first frame downsampled to ``size x size`` (area averaging): RGB in [0, 1] and depth
    in meters clipped to ``[0, max_depth]``, flattened to ``size * size * 4`` values."""
    rgb = np.asarray(rgb)
    depth = np.asarray(depth, np.float32)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or depth.shape != rgb.shape[:2]:
        raise ShapeError(f"need rgb [H, W, 3] and depth [H, W], got {rgb.shape} and {depth.shape}")
    if not np.all(np.isfinite(depth)):
        raise DataError("the depth frame holds NaN or inf")
    image = np.concatenate(
        [
            rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0),
            np.clip(depth, 0.0, max_depth)[..., None],
        ],
        axis=-1,
    )
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return small.reshape(-1).astype(np.float32)


class NearestNeighbourBaseline:
    """Retrieve the training clip nearest in instruction embedding, then in first RGB-D frame,
    and transfer its displacement field (see the module docstring)."""

    def __init__(
        self,
        train_clips: Sequence[EvalClip],
        text_encoder,
        *,
        image_size: int = 16,
        text_tolerance: float = 0.001,
        max_depth: float = 5.0,
    ):
        if not train_clips:
            raise DataError("the nearest-neighbour baseline needs at least one training clip")
        self.train_clips = list(train_clips)
        self.text_encoder = text_encoder
        self.image_size = int(image_size)
        self.text_tolerance = float(text_tolerance)
        self.max_depth = float(max_depth)
        self.text_vectors = np.asarray(
            text_encoder.pooled([c.instruction for c in self.train_clips]), np.float64
        )
        self.image_vectors = np.stack(
            [image_features(c.rgb, c.depth, self.image_size, self.max_depth) for c in train_clips]
        ).astype(np.float64)

    def distances(self, clip: EvalClip) -> tuple[np.ndarray, np.ndarray]:
        """``(instruction cosine, first-frame RMSE)`` against every training clip, each ``[K]``."""
        query_text = np.asarray(self.text_encoder.pooled([clip.instruction])[0], np.float64)
        query_image = image_features(clip.rgb, clip.depth, self.image_size, self.max_depth)
        cosine = self.text_vectors @ query_text
        rmse = np.sqrt(np.mean((self.image_vectors - query_image.astype(np.float64)) ** 2, -1))
        return cosine, rmse

    def retrieve(self, clip: EvalClip) -> dict:
        """The best training clip: ``{"position", "index", "task_id", "instruction",
        "text_cosine", "image_rmse", "candidates"}`` (``position`` in the training list,
        ``index`` in its dataset, ``candidates`` the clips within the text tolerance)."""
        cosine, rmse = self.distances(clip)
        candidates = np.flatnonzero(cosine >= cosine.max() - self.text_tolerance)
        best = int(candidates[np.argmin(rmse[candidates])])
        match = self.train_clips[best]
        return {
            "position": best,
            "index": match.index,
            "task_id": match.task_id,
            "instruction": match.instruction,
            "text_cosine": float(cosine[best]),
            "image_rmse": float(rmse[best]),
            "candidates": int(candidates.size),
        }

    def predict(self, clip: EvalClip, match: dict | None = None) -> Float[np.ndarray, "T N 3"]:
        """World points: the nearest clip's camera-frame displacements on ``clip``'s points."""
        match = match or self.retrieve(clip)
        source = self.train_clips[match["position"]]
        return transfer_displacement(clip, camera_displacement(source))


__all__ = [
    "MeanFlowBaseline",
    "NearestNeighbourBaseline",
    "camera_displacement",
    "image_features",
    "transfer_displacement",
    "zero_motion",
]
