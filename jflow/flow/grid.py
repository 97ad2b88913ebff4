"""Conversion between the point layout ``[T, N, ...]`` and the grid layout ``[T, H, W, C]``.

The flow diffuser sees a flow as a small "video" over a regular query grid (3DFlowAction uses a
16x16 grid, so N = 256). Point ``n`` sits at grid cell ``(n // W, n % W)``: row-major, rows
ordered by image y and columns by image x of the point's first-frame pixel position. The grid
channels are ``GRID_CHANNELS = ("x", "y", "depth", "visible")``: pixel coordinates, camera
depth in meters, and visibility as 1.0 / 0.0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jflow.errors import ShapeError
from jflow.flow.records import ObjectFlow
from jflow.geometry.camera import PinholeIntrinsics, unproject

GRID_CHANNELS = ("x", "y", "depth", "visible")
DEFAULT_GRID = (16, 16)


def _check_grid(num_points: int, grid_hw: tuple[int, int]) -> None:
    gh, gw = grid_hw
    if gh <= 0 or gw <= 0:
        raise ShapeError(f"grid size must be positive, got {grid_hw}")
    if gh * gw != num_points:
        raise ShapeError(
            f"a {gh}x{gw} grid holds {gh * gw} points, but the flow has {num_points}; "
            "resample the flow to that many points first"
        )


def grid_order(
    tracks0: Float[np.ndarray, "N 2"], grid_hw: tuple[int, int] = DEFAULT_GRID
) -> Int[np.ndarray, " N"]:
    """A permutation that arranges scattered points on the grid by their first-frame pixels.

    Points are split into ``H`` rows by image y (top to bottom), and each row is sorted by x
    (left to right). For points that already lie on a regular grid this is the row-major order.
    """
    tracks0 = np.asarray(tracks0)
    if tracks0.ndim != 2 or tracks0.shape[1] != 2:
        raise ShapeError(f"tracks0 must be [N, 2] pixel positions, got shape {tracks0.shape}")
    _check_grid(tracks0.shape[0], grid_hw)
    gh, gw = grid_hw
    by_y = np.argsort(tracks0[:, 1], kind="stable")
    rows = by_y.reshape(gh, gw)
    order = np.take_along_axis(rows, np.argsort(tracks0[rows, 0], axis=1, kind="stable"), axis=1)
    return order.reshape(-1)


def to_grid_order(flow: ObjectFlow, grid_hw: tuple[int, int] = DEFAULT_GRID) -> ObjectFlow:
    """Reorder a flow's points with :func:`grid_order` of its first frame's pixel tracks."""
    return flow.take_points(grid_order(np.asarray(flow.tracks[0]), grid_hw))


def flow_to_grid(
    flow: ObjectFlow, grid_hw: tuple[int, int] = DEFAULT_GRID
) -> Float[Array, "T H W 4"]:
    """The grid layout ``[T, H, W, 4]`` with channels ``GRID_CHANNELS`` (a reshape, no reordering)."""
    t, n = flow.points.shape[:2]
    _check_grid(n, grid_hw)
    channels = jnp.concatenate(
        [
            jnp.asarray(flow.tracks, jnp.float32),
            jnp.asarray(flow.depth, jnp.float32)[..., None],
            jnp.asarray(flow.visible, jnp.float32)[..., None],
        ],
        axis=-1,
    )
    return channels.reshape(t, grid_hw[0], grid_hw[1], len(GRID_CHANNELS))


def grid_to_flow(grid: Float[Array, "T H W 4"], intrinsics: PinholeIntrinsics) -> ObjectFlow:
    """Back from the grid layout: points are unprojected into the camera frame.

    Visibility is ``visible-channel > 0.5``. The result's ``frame`` is ``"camera"``; map it to the
    world with :meth:`ObjectFlow.to_world`.
    """
    grid = jnp.asarray(grid)
    if grid.ndim != 4 or grid.shape[-1] != len(GRID_CHANNELS):
        raise ShapeError(f"grid must be [T, H, W, {len(GRID_CHANNELS)}], got shape {grid.shape}")
    t = grid.shape[0]
    flat = grid.reshape(t, -1, len(GRID_CHANNELS))
    tracks = flat[..., :2]
    depth = flat[..., 2]
    return ObjectFlow(
        points=unproject(tracks, depth, intrinsics),
        visible=flat[..., 3] > 0.5,
        tracks=tracks,
        depth=depth,
        frame="camera",
    )


def grid_queries_in_box(
    box_xyxy: Float[np.ndarray, 4], grid_hw: tuple[int, int] = DEFAULT_GRID
) -> Float[np.ndarray, "N 2"]:
    """Pixel positions ``(x, y)`` of a regular ``H x W`` grid of cell centres inside a box.

    The box is ``(x_min, y_min, x_max, y_max)`` in pixels; points come in row-major order.
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy).reshape(4))
    if not (x1 > x0 and y1 > y0):
        raise ShapeError(f"box must have x_max > x_min and y_max > y_min, got {box_xyxy}")
    gh, gw = grid_hw
    xs = x0 + (np.arange(gw) + 0.5) * (x1 - x0) / gw
    ys = y0 + (np.arange(gh) + 0.5) * (y1 - y0) / gh
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return np.stack([gx, gy], axis=-1).reshape(-1, 2).astype(np.float32)


def resample_points(flow: ObjectFlow, num_points: int, seed: int = 0) -> ObjectFlow:
    """Choose ``num_points`` points, preferring those visible in the first frame."""
    n = flow.num_points
    if num_points > n:
        raise ShapeError(f"cannot choose {num_points} points from a flow of {n}")
    rng = np.random.default_rng(seed)
    vis0 = np.asarray(flow.visible[0])
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(vis0)), rng.permutation(np.flatnonzero(~vis0))]
    )
    return flow.take_points(np.sort(order[:num_points]))


__all__ = [
    "DEFAULT_GRID",
    "GRID_CHANNELS",
    "flow_to_grid",
    "grid_order",
    "grid_queries_in_box",
    "grid_to_flow",
    "resample_points",
    "to_grid_order",
]
