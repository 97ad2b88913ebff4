"""Normalisation of grid-layout flows with statistics stored beside a dataset.

The diffuser trains on normalised grids: the ``x``, ``y`` and ``depth`` channels are shifted and
scaled by per-channel mean and standard deviation computed over a dataset's visible points, and
the ``visible`` channel is mapped from {0, 1} to {-1, 1}. The statistics travel in the dataset
manifest (``FlowStats.to_dict``) so that training and sampling use the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jflow.errors import DataError, ShapeError
from jflow.flow.grid import GRID_CHANNELS

_MIN_STD = 1e-6


@dataclasses.dataclass(frozen=True)
class FlowStats:
    """Per-channel mean and standard deviation of the ``x, y, depth`` grid channels."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    count: int = 0

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ShapeError(
                f"FlowStats holds 3 channels (x, y, depth), got {self.mean}, {self.std}"
            )
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(self.std)):
            raise DataError(f"FlowStats must be finite, got mean={self.mean} std={self.std}")
        if min(self.std) < _MIN_STD:
            raise DataError(f"FlowStats std must be >= {_MIN_STD}, got {self.std}")

    @staticmethod
    def from_grids(grids: Iterable[Float[np.ndarray, "T H W 4"]]) -> FlowStats:
        """Statistics over the visible cells of grid-layout flows (streamed, float64 sums)."""
        total = np.zeros(3)
        total_sq = np.zeros(3)
        count = 0
        for grid in grids:
            grid = np.asarray(grid, np.float64)
            if grid.ndim != 4 or grid.shape[-1] != len(GRID_CHANNELS):
                raise ShapeError(f"grids must be [T, H, W, 4], got shape {grid.shape}")
            vis = grid[..., 3] > 0.5
            values = grid[..., :3][vis]
            total += values.sum(axis=0)
            total_sq += (values**2).sum(axis=0)
            count += values.shape[0]
        if count < 2:
            raise DataError(f"cannot compute flow statistics from {count} visible points")
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        std = np.maximum(np.sqrt(var), _MIN_STD)
        return FlowStats(mean=tuple(mean.tolist()), std=tuple(std.tolist()), count=int(count))

    def to_dict(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "count": self.count,
            "channels": list(GRID_CHANNELS[:3]),
        }

    @staticmethod
    def from_dict(data: dict) -> FlowStats:
        try:
            return FlowStats(
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                count=int(data.get("count", 0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"malformed flow statistics {data!r}: {err}") from err


def _normalize(grid, stats: FlowStats, xp):
    mean = xp.asarray(stats.mean, grid.dtype)
    std = xp.asarray(stats.std, grid.dtype)
    return xp.concatenate([(grid[..., :3] - mean) / std, grid[..., 3:] * 2.0 - 1.0], axis=-1)


def normalize_grid(
    grid: Float[Array, "*B T H W 4"], stats: FlowStats
) -> Float[Array, "*B T H W 4"]:
    """Map a grid to the diffuser's normalised space (JAX; jit-able)."""
    return _normalize(jnp.asarray(grid), stats, jnp)


def normalize_grid_numpy(
    grid: Float[np.ndarray, "*B T H W 4"], stats: FlowStats
) -> Float[np.ndarray, "*B T H W 4"]:
    """:func:`normalize_grid` in numpy, for input pipelines that must not start JAX work."""
    return _normalize(np.asarray(grid), stats, np)


def denormalize_grid(
    grid: Float[Array, "*B T H W 4"], stats: FlowStats
) -> Float[Array, "*B T H W 4"]:
    """Inverse of :func:`normalize_grid`; the visibility channel is clipped to [0, 1]."""
    grid = jnp.asarray(grid)
    mean = jnp.asarray(stats.mean, grid.dtype)
    std = jnp.asarray(stats.std, grid.dtype)
    xyz = grid[..., :3] * std + mean
    vis = jnp.clip((grid[..., 3:] + 1.0) * 0.5, 0.0, 1.0)
    return jnp.concatenate([xyz, vis], axis=-1)


__all__ = ["FlowStats", "denormalize_grid", "normalize_grid", "normalize_grid_numpy"]
