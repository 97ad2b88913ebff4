"""Point subsampling: greedy farthest point sampling (FPS).

FPS starts from one point and repeatedly adds the point farthest (Euclidean) from all points
chosen so far. With ``d_k`` the distance of the ``k``-th choice to the earlier ones, ``d_k`` never
increases, so for the chosen set ``S``::

    max_p min_{s in S} |p - s|  <=  min_{s != s' in S} |s - s'|

(every point is covered within the smallest gap between samples), which makes ``S`` a
2-approximation of the optimal ``K``-centre cover.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jflow.errors import ConfigError, ShapeError


def farthest_point_sampling(
    points: Float[Array, "N 3"],
    num_samples: int,
    *,
    valid: Bool[Array, " N"] | None = None,
    start_index: int | Int[Array, ""] = 0,
) -> Int[Array, " K"]:
    """Indices of ``num_samples`` points chosen by farthest point sampling.

    Args:
        points: ``[N, 3]`` points (any number of coordinates works). Points with a non-finite
            coordinate are treated as invalid.
        num_samples: ``K``, static under ``jax.jit`` (``static_argnames="num_samples"``).
        valid: ``[N]`` mask; invalid points are never chosen. ``None``: all points are valid.
        start_index: the first sample. When that point is invalid, the first valid point (lowest
            index) is used instead.

    Returns:
        ``[K]`` int32 indices, distinct, in the order chosen; ties go to the lowest index.
        When ``valid`` is traced (inside jit) and holds fewer than ``K`` valid points, the
        indices after the last valid point repeat the first sample (so no invalid point is
        returned); if no point is valid at all, every index is ``start_index``.

    Raises:
        ShapeError: ``points`` is not ``[N, D]`` or ``valid`` is not ``[N]``.
        ConfigError: ``num_samples`` is negative or larger than ``N``, or (when ``valid`` is
            concrete) larger than the number of valid points; ``start_index`` (when concrete)
            is outside ``[0, N)``.
    """
    points = jnp.asarray(points)
    if points.ndim != 2:
        raise ShapeError(f"points must have shape [N, D] (D = 3 for 3D points), got {points.shape}")
    n = points.shape[0]
    if int(num_samples) != num_samples or num_samples < 0:
        raise ConfigError(f"num_samples must be a non-negative integer, got {num_samples}")
    num_samples = int(num_samples)
    if num_samples > n:
        raise ConfigError(f"cannot sample {num_samples} points from {n} points")
    if valid is None:
        valid = jnp.ones((n,), bool)
    else:
        valid = jnp.asarray(valid)
        if valid.shape != (n,):
            raise ShapeError(f"valid must have shape [N] = ({n},), got {valid.shape}")
        if not isinstance(valid, jax.core.Tracer):
            num_valid = int(np.count_nonzero(np.asarray(valid)))
            if num_samples > num_valid:
                raise ConfigError(
                    f"cannot sample {num_samples} points: only {num_valid} of {n} points are valid"
                )
    if not isinstance(start_index, jax.core.Tracer) and not 0 <= int(start_index) < max(n, 1):
        raise ConfigError(f"start_index must be in [0, {n}), got {start_index}")
    return _fps(points, valid.astype(bool), jnp.asarray(start_index, jnp.int32), num_samples)


@functools.partial(jax.jit, static_argnames="num_samples")
def _fps(points, valid, start_index, num_samples: int):
    n = points.shape[0]
    if num_samples == 0 or n == 0:
        return jnp.zeros((num_samples,), jnp.int32)
    valid = valid & jnp.all(jnp.isfinite(points), axis=-1)
    points = jnp.where(valid[:, None], points, 0.0)
    first = jnp.where(valid[start_index], start_index, jnp.argmax(valid)).astype(jnp.int32)
    first = jnp.where(jnp.any(valid), first, start_index)

    def add_sample(k, carry):
        indices, chosen, min_sq_dist = carry
        sq_dist = jnp.sum((points - points[indices[k - 1]]) ** 2, axis=-1)
        min_sq_dist = jnp.minimum(min_sq_dist, sq_dist)
        # Already chosen points score -1 and invalid ones -inf, below any candidate (>= 0).
        score = jnp.where(chosen, -1.0, jnp.where(valid, min_sq_dist, -jnp.inf))
        best = jnp.argmax(score).astype(jnp.int32)
        best = jnp.where(score[best] >= 0, best, first)
        return indices.at[k].set(best), chosen.at[best].set(True), min_sq_dist

    indices = jnp.full((num_samples,), first, jnp.int32)
    chosen = jnp.zeros((n,), bool).at[first].set(True)
    min_sq_dist = jnp.full((n,), jnp.inf, points.dtype)
    indices, _, _ = jax.lax.fori_loop(1, num_samples, add_sample, (indices, chosen, min_sq_dist))
    return indices


__all__ = ["farthest_point_sampling"]
