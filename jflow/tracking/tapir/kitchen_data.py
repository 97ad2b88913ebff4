"""TAPIR training examples and TAP-Vid evaluation queries from ground-truth tracks.

The inputs are the layouts of :class:`~jflow.flow.records.FlowClip` (e.g. the kitchen's
rendered episodes): ``video [T, H, W, 3]`` uint8, ``tracks [T, N, 2]`` as (x, y) pixels
(pixel-corner convention, docs/conventions.md) and ``visible [T, N]``. The outputs are in
the layouts of :mod:`jflow.tracking.tapir.train`: queries ``(t, y, x)`` pixels, target
tracks ``[Q, T, 2]`` (x, y) and occlusion flags ``[Q, T]``.

Training queries follow TAPIR's training recipe: a track is queried at a frame where it is
visible, chosen uniformly among its visible frames, and the loss sees every frame of it.
Tracks that are never visible cannot be queried. When a clip has fewer queryable tracks than
the number of queries asked for, the rest of the slots repeat a queryable one with a zero
``mask`` so that every example of a batch has the same shape and the padding adds nothing to
the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Float, Int, UInt8

from jflow.errors import ConfigError, DataError, ShapeError
from jflow.flow.records import FlowClip
from jflow.metrics.tapvid import sample_queries_first


def _check_clip_arrays(
    video: np.ndarray, tracks: np.ndarray, visible: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    video = np.asarray(video)
    tracks = np.asarray(tracks, np.float32)
    visible = np.asarray(visible, bool)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ShapeError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    t = video.shape[0]
    if tracks.ndim != 3 or tracks.shape[0] != t or tracks.shape[-1] != 2:
        raise ShapeError(f"tracks must be [T={t}, N, 2] (x, y), got shape {tracks.shape}")
    if visible.shape != tracks.shape[:2]:
        raise ShapeError(f"visible must be [T, N] = {tracks.shape[:2]}, got {visible.shape}")
    # A point with no finite position cannot be visible; its target is never used.
    finite = np.all(np.isfinite(tracks), axis=-1)
    visible = visible & finite
    tracks = np.where(finite[..., None], tracks, 0.0).astype(np.float32)
    return video, tracks, visible


def sample_training_queries(
    visible: Bool[np.ndarray, "T N"], num_queries: int, rng: np.random.Generator
) -> tuple[Int[np.ndarray, " Q"], Int[np.ndarray, " Q"], Bool[np.ndarray, " Q"]]:
    """Choose ``num_queries`` tracks and a visible query frame for each.

    Returns ``(track index [Q], query frame [Q], valid [Q])``. Distinct tracks are drawn
    among those visible in at least one frame; each one's frame is uniform over its visible
    frames. When fewer than ``num_queries`` tracks are queryable, all of them are used and
    the remaining slots repeat them with ``valid = False``. Raises :class:`DataError` when
    no track is visible anywhere.
    """
    visible = np.asarray(visible, bool)
    if visible.ndim != 2:
        raise ShapeError(f"visible must be [T, N], got shape {visible.shape}")
    if num_queries < 1:
        raise ConfigError(f"num_queries must be >= 1, got {num_queries}")
    queryable = np.flatnonzero(visible.any(axis=0))
    if queryable.size == 0:
        raise DataError("no ground-truth track is visible in any frame: nothing to query")
    take = min(num_queries, queryable.size)
    chosen = rng.choice(queryable, size=take, replace=False)
    valid = np.ones(num_queries, bool)
    if take < num_queries:
        pad = rng.choice(chosen, size=num_queries - take, replace=True)
        chosen = np.concatenate([chosen, pad])
        valid[take:] = False
    frames = np.empty(num_queries, np.int64)
    for i, n in enumerate(chosen):
        frames[i] = rng.choice(np.flatnonzero(visible[:, n]))
    return chosen.astype(np.int64), frames, valid


def training_example(
    video: UInt8[np.ndarray, "T H W 3"],
    tracks: Float[np.ndarray, "T N 2"],
    visible: Bool[np.ndarray, "T N"],
    num_queries: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """One TAPIR training example (unbatched) from ground truth in the FlowClip layout.

    Returns ``video [T, H, W, 3]`` uint8, ``query_points [Q, 3]`` (t, y, x) at visible
    ground-truth positions, ``target_points [Q, T, 2]`` (x, y), ``occluded [Q, T]`` bool and
    ``mask [Q, T]`` float32 (0 for padding slots, see :func:`sample_training_queries`).
    """
    video, tracks, visible = _check_clip_arrays(video, tracks, visible)
    idx, frames, valid = sample_training_queries(visible, num_queries, rng)
    target = tracks[:, idx].transpose(1, 0, 2)  # [Q, T, 2]
    occluded = ~visible[:, idx].T  # [Q, T]
    xy = target[np.arange(len(idx)), frames]
    queries = np.stack([frames.astype(np.float32), xy[:, 1], xy[:, 0]], axis=-1)
    mask = np.repeat(valid[:, None], video.shape[0], axis=1).astype(np.float32)
    return {
        "video": video,
        "query_points": queries.astype(np.float32),
        "target_points": target.astype(np.float32),
        "occluded": occluded,
        "mask": mask,
    }


def example_from_clip(
    clip: FlowClip, num_queries: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """:func:`training_example` of a :class:`FlowClip` that carries its ``video``."""
    if clip.video is None:
        raise DataError(f"FlowClip of task {clip.task_id!r} has no video to train a tracker on")
    return training_example(clip.video, clip.flow.tracks, clip.flow.visible, num_queries, rng)


def stack_examples(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack unbatched examples into a batch (every array gains a leading ``B`` axis)."""
    if not examples:
        raise ConfigError("stack_examples needs at least one example")
    keys = examples[0].keys()
    for i, ex in enumerate(examples):
        if ex.keys() != keys:
            raise ShapeError(f"example {i} has keys {sorted(ex)}, expected {sorted(keys)}")
        for k in keys:
            if ex[k].shape != examples[0][k].shape:
                raise ShapeError(
                    f"example {i} {k!r} has shape {ex[k].shape}, example 0 has "
                    f"{examples[0][k].shape}: examples of a batch need equal T, H, W and Q"
                )
    return {k: np.stack([ex[k] for ex in examples]) for k in keys}


def first_visible_queries(
    tracks: Float[np.ndarray, "T N 2"], visible: Bool[np.ndarray, "T N"]
) -> tuple[Float[np.ndarray, "M 3"], Float[np.ndarray, "M T 2"], Bool[np.ndarray, "M T"]]:
    """TAP-Vid "first" queries from ground truth in the FlowClip layout.

    Each track visible somewhere is queried at its first visible frame; returns
    ``(queries [M, 3] (t, y, x), gt_tracks [M, T, 2] (x, y), gt_occluded [M, T])``, the
    inputs of :func:`jflow.metrics.tapvid.tapvid_metrics` with ``query_mode="first"``.
    """
    tracks = np.asarray(tracks, np.float32)
    visible = np.asarray(visible, bool)
    if tracks.ndim != 3 or tracks.shape[-1] != 2 or visible.shape != tracks.shape[:2]:
        raise ShapeError(
            f"expected tracks [T, N, 2] and visible [T, N], got {tracks.shape}, {visible.shape}"
        )
    finite = np.all(np.isfinite(tracks), axis=-1)
    visible = visible & finite
    gt_tracks = np.where(finite[..., None], tracks, 0.0).transpose(1, 0, 2)
    gt_occluded = ~visible.T
    queries, idx = sample_queries_first(gt_occluded, gt_tracks)
    return queries, gt_tracks[idx].astype(np.float32), gt_occluded[idx]
