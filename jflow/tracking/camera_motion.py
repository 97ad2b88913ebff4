"""Camera-motion removal from static-background tracks (3DFlowAction section 3.1).

For every frame ``t`` a 2D transform ``H_t`` (3x3, homogeneous pixels) maps the frame's pixels
to the reference frame's pixels (frame 0 by default). It is fitted with RANSAC (OpenCV) to the
tracks of background points, so that points on moving objects are rejected as outliers.
Removing camera motion applies ``H_t`` to every track in frame ``t``. A fitted transform that
moves no image corner by more than ``static_tolerance_px`` is replaced by the identity, so a
video from a still camera comes back exactly unchanged. The default of 1 px sits above the
fit noise measured on still-camera videos (LIBERO and BridgeData clips, Lucas-Kanade tracks:
corner motion of the fitted transforms up to 0.65 px with a homography, 0.54 px affine).

Pixel coordinates follow docs/conventions.md; the transforms act on them directly.
"""

from __future__ import annotations

import cv2
import numpy as np
from jaxtyping import Bool, Float

from jflow.errors import ConfigError, DataError, ShapeError

MOTION_MODELS = ("none", "affine", "homography")
RANSAC_ITERATIONS = 5000
RANSAC_CONFIDENCE = 0.999


def estimate_camera_motion(
    tracks: Float[np.ndarray, "N T 2"],
    visible: Bool[np.ndarray, "N T"],
    image_size: tuple[int, int],
    model: str = "homography",
    reference_frame: int = 0,
    ransac_threshold_px: float = 1.0,
    static_tolerance_px: float = 1.0,
    min_points: int = 8,
) -> Float[np.ndarray, "T 3 3"]:
    """Per-frame transforms ``ref_from_t`` mapping frame ``t`` pixels to ``reference_frame``.

    ``tracks``/``visible`` are tracker outputs (``[N, T, ...]``) of points that are mostly on
    the static background; points visible in both frames are used. ``image_size`` is
    ``(width, height)``. ``model`` is ``"affine"`` (``cv2.estimateAffine2D``, 6 dof),
    ``"homography"`` (``cv2.findHomography``, 8 dof) or ``"none"`` (identities). Raises
    :class:`DataError` when a frame shares fewer than ``min_points`` visible points with the
    reference frame, or RANSAC fails.
    """
    tracks = np.asarray(tracks, np.float64)
    visible = np.asarray(visible, bool)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ShapeError(f"tracks must be [N, T, 2], got shape {tracks.shape}")
    if visible.shape != tracks.shape[:2]:
        raise ShapeError(f"visible must be [N, T] = {tracks.shape[:2]}, got {visible.shape}")
    if model not in MOTION_MODELS:
        raise ConfigError(f"camera-motion model must be one of {MOTION_MODELS}, got {model!r}")
    n, t_len = visible.shape
    if not 0 <= reference_frame < t_len:
        raise ConfigError(f"reference_frame must be in [0, {t_len}), got {reference_frame}")
    out = np.tile(np.eye(3), (t_len, 1, 1))
    if model == "none":
        return out
    width, height = image_size
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    ref = tracks[:, reference_frame]
    for t in range(t_len):
        if t == reference_frame:
            continue
        both = visible[:, t] & visible[:, reference_frame]
        if both.sum() < min_points:
            raise DataError(
                f"camera-motion estimation: frame {t} shares only {int(both.sum())} visible "
                f"background points with frame {reference_frame} (need {min_points})"
            )
        src = tracks[both, t].astype(np.float32)
        dst = ref[both].astype(np.float32)
        if model == "affine":
            m, _ = cv2.estimateAffine2D(
                src,
                dst,
                method=cv2.RANSAC,
                ransacReprojThreshold=ransac_threshold_px,
                maxIters=RANSAC_ITERATIONS,
                confidence=RANSAC_CONFIDENCE,
            )
            h = None if m is None else np.vstack([m, [0.0, 0.0, 1.0]])
        else:
            h, _ = cv2.findHomography(
                src,
                dst,
                cv2.RANSAC,
                ransac_threshold_px,
                maxIters=RANSAC_ITERATIONS,
                confidence=RANSAC_CONFIDENCE,
            )
        if h is None or not np.all(np.isfinite(h)):
            raise DataError(f"camera-motion estimation: RANSAC found no {model} for frame {t}")
        moved = np.linalg.norm(apply_transform(h, corners) - corners, axis=-1).max()
        out[t] = np.eye(3) if moved <= static_tolerance_px else h
    return out


def apply_transform(
    transform: Float[np.ndarray, "3 3"], points: Float[np.ndarray, "*batch 2"]
) -> Float[np.ndarray, "*batch 2"]:
    """Apply one homogeneous 2D transform to pixel points ``(x, y)``."""
    points = np.asarray(points, np.float64)
    hom = points @ transform[:, :2].T + transform[:, 2]
    return hom[..., :2] / hom[..., 2:3]


def remove_camera_motion(
    tracks: Float[np.ndarray, "N T 2"], transforms: Float[np.ndarray, "T 3 3"]
) -> Float[np.ndarray, "N T 2"]:
    """Map every track position of frame ``t`` into the reference frame with ``transforms[t]``."""
    tracks = np.asarray(tracks)
    transforms = np.asarray(transforms, np.float64)
    if tracks.ndim != 3 or transforms.shape != (tracks.shape[1], 3, 3):
        raise ShapeError(
            f"tracks [N, T, 2] and transforms [T, 3, 3] must agree, got {tracks.shape} and "
            f"{transforms.shape}"
        )
    out = np.empty_like(tracks)
    for t in range(tracks.shape[1]):
        if np.array_equal(transforms[t], np.eye(3)):
            out[:, t] = tracks[:, t]
        else:
            out[:, t] = apply_transform(transforms[t], tracks[:, t])
    return out


__all__ = ["MOTION_MODELS", "apply_transform", "estimate_camera_motion", "remove_camera_motion"]
