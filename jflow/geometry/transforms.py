"""Applying jaxlie SE(3) transforms to point arrays.

Transforms are named ``a_from_b``: ``transform_points(a_from_b, points_b)`` gives the points in
frame ``a``. See docs/conventions.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jaxlie
from jaxtyping import Array, Float

# Full float32 precision: on GPUs JAX's default float32 matmul may round its inputs to TF32
# (a 10-bit mantissa, ~1e-3 relative: millimetres at a metre).
_FULL = jax.lax.Precision.HIGHEST


def transform_points(
    a_from_b: jaxlie.SE3, points_b: Float[Array, "*batch 3"]
) -> Float[Array, "*batch 3"]:
    """Map points from frame ``b`` to frame ``a`` with one (unbatched) SE(3) transform.

    ``points_b`` may have any number of leading axes; the transform is broadcast over them.
    """
    points_b = jnp.asarray(points_b)
    rotation = a_from_b.rotation().as_matrix().astype(points_b.dtype)
    translation = a_from_b.translation().astype(points_b.dtype)
    return jnp.matmul(points_b, rotation.T, precision=_FULL) + translation


def transform_points_batched(
    a_from_b: jaxlie.SE3, points_b: Float[Array, "T N 3"]
) -> Float[Array, "T N 3"]:
    """Map ``points_b[t]`` with ``a_from_b[t]``: one transform per leading index (a trajectory)."""
    points_b = jnp.asarray(points_b)
    rotation = a_from_b.rotation().as_matrix().astype(points_b.dtype)  # [T, 3, 3]
    translation = a_from_b.translation().astype(points_b.dtype)  # [T, 3]
    moved = jnp.einsum("tij,tnj->tni", rotation, points_b, precision=_FULL)
    return moved + translation[:, None, :]


def se3_from_matrix(matrix: Float[Array, "*batch 4 4"]) -> jaxlie.SE3:
    """Build a jaxlie SE3 from homogeneous 4x4 matrices (rotation part must be orthonormal)."""
    return jaxlie.SE3.from_matrix(jnp.asarray(matrix))
