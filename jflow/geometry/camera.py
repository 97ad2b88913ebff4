"""Pinhole cameras: intrinsics, projection, unprojection and depth sampling.

Conventions (docs/conventions.md): the camera frame is OpenCV's (x right, y down, z forward);
pixel coordinates are (x, y) in pixels with (0, 0) the top-left corner of the top-left pixel, so
the centre of pixel row ``i``, column ``j`` is at ``(j + 0.5, i + 0.5)``. Camera poses are
``world_from_camera`` jaxlie SE3 transforms.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import jax_dataclasses as jdc
import jaxlie
import numpy as np
from jaxtyping import Array, Bool, Float

from jflow.errors import ConfigError
from jflow.geometry.transforms import transform_points


@jdc.pytree_dataclass
class PinholeIntrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels.

    ``fx, fy`` are focal lengths in pixels; ``cx, cy`` the principal point in the pixel
    convention above (an ideal centred camera has ``cx = width / 2``).
    """

    fx: Float[Array, ""]
    fy: Float[Array, ""]
    cx: Float[Array, ""]
    cy: Float[Array, ""]
    width: jdc.Static[int]
    height: jdc.Static[int]

    @staticmethod
    def from_fovy(fovy_deg: float, width: int, height: int) -> PinholeIntrinsics:
        """A centred camera with square pixels and vertical field of view ``fovy_deg`` (degrees)."""
        if not 0.0 < fovy_deg < 180.0:
            raise ConfigError(f"fovy_deg must be in (0, 180), got {fovy_deg}")
        if width <= 0 or height <= 0:
            raise ConfigError(f"image size must be positive, got {width}x{height}")
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
        return PinholeIntrinsics(
            fx=jnp.asarray(f, jnp.float32),
            fy=jnp.asarray(f, jnp.float32),
            cx=jnp.asarray(width / 2.0, jnp.float32),
            cy=jnp.asarray(height / 2.0, jnp.float32),
            width=int(width),
            height=int(height),
        )

    @staticmethod
    def from_matrix(k: Float[Array, "3 3"], width: int, height: int) -> PinholeIntrinsics:
        """From a 3x3 matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (skew must be zero)."""
        k = jnp.asarray(k)
        if k.shape != (3, 3):
            raise ConfigError(f"intrinsics matrix must be 3x3, got shape {k.shape}")
        return PinholeIntrinsics(
            fx=k[0, 0], fy=k[1, 1], cx=k[0, 2], cy=k[1, 2], width=int(width), height=int(height)
        )

    def as_matrix(self) -> Float[Array, "3 3"]:
        zero = jnp.zeros_like(self.fx)
        one = jnp.ones_like(self.fx)
        return jnp.stack(
            [
                jnp.stack([self.fx, zero, self.cx]),
                jnp.stack([zero, self.fy, self.cy]),
                jnp.stack([zero, zero, one]),
            ]
        )

    def resized(self, width: int, height: int) -> PinholeIntrinsics:
        """The same camera rendered at another resolution (pixel-corner convention kept)."""
        sx = width / self.width
        sy = height / self.height
        return PinholeIntrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
            width=int(width),
            height=int(height),
        )

    def astype(self, dtype) -> PinholeIntrinsics:
        return PinholeIntrinsics(
            fx=jnp.asarray(self.fx, dtype),
            fy=jnp.asarray(self.fy, dtype),
            cx=jnp.asarray(self.cx, dtype),
            cy=jnp.asarray(self.cy, dtype),
            width=self.width,
            height=self.height,
        )


def _as_float(x, like=None) -> Array:
    """``x`` as an array; integer or boolean arrays become floating point (``like``'s dtype
    when that is floating, else JAX's default float), so that results are not truncated."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    if like is not None and jnp.issubdtype(jnp.asarray(like).dtype, jnp.inexact):
        return x.astype(jnp.asarray(like).dtype)
    return x.astype(jnp.result_type(float))


def project(
    points_cam: Float[Array, "*batch 3"], intrinsics: PinholeIntrinsics
) -> tuple[Float[Array, "*batch 2"], Float[Array, "*batch"]]:
    """Project camera-frame points to pixels ``(x, y)``; also returns their depth ``z``.

    Points at or behind the camera (``z <= 0``) get finite but meaningless pixels; test
    ``depth > 0`` to mask them. No NaN or inf is produced.
    """
    points_cam = _as_float(points_cam)
    z = points_cam[..., 2]
    safe_z = jnp.where(jnp.abs(z) > 1e-12, z, 1e-12)
    x = intrinsics.fx * points_cam[..., 0] / safe_z + intrinsics.cx
    y = intrinsics.fy * points_cam[..., 1] / safe_z + intrinsics.cy
    return jnp.stack([x, y], axis=-1).astype(points_cam.dtype), z


def unproject(
    pixels: Float[Array, "*batch 2"], depth: Float[Array, "*batch"], intrinsics: PinholeIntrinsics
) -> Float[Array, "*batch 3"]:
    """Lift pixels ``(x, y)`` with depth ``z`` (meters along the optical axis) to camera points."""
    depth = jnp.asarray(depth)
    pixels = _as_float(pixels, depth)
    depth = depth.astype(pixels.dtype)
    x = (pixels[..., 0] - intrinsics.cx) / intrinsics.fx * depth
    y = (pixels[..., 1] - intrinsics.cy) / intrinsics.fy * depth
    return jnp.stack([x, y, depth], axis=-1).astype(pixels.dtype)


def project_world(
    points_world: Float[Array, "*batch 3"],
    intrinsics: PinholeIntrinsics,
    world_from_camera: jaxlie.SE3,
) -> tuple[Float[Array, "*batch 2"], Float[Array, "*batch"]]:
    """Project world-frame points through a camera at pose ``world_from_camera``."""
    points_cam = transform_points(world_from_camera.inverse(), points_world)
    return project(points_cam, intrinsics)


def unproject_to_world(
    pixels: Float[Array, "*batch 2"],
    depth: Float[Array, "*batch"],
    intrinsics: PinholeIntrinsics,
    world_from_camera: jaxlie.SE3,
) -> Float[Array, "*batch 3"]:
    """Lift pixels with depth to world-frame points."""
    return transform_points(world_from_camera, unproject(pixels, depth, intrinsics))


def in_image(
    pixels: Float[Array, "*batch 2"], intrinsics: PinholeIntrinsics
) -> Bool[Array, "*batch"]:
    """Whether pixel coordinates lie inside the image rectangle ``[0, W) x [0, H)``."""
    x, y = pixels[..., 0], pixels[..., 1]
    return (x >= 0) & (x < intrinsics.width) & (y >= 0) & (y < intrinsics.height)


def sample_depth(
    depth_map: Float[Array, "H W"],
    pixels: Float[Array, "*batch 2"],
    min_depth: float = 1e-6,
) -> tuple[Float[Array, "*batch"], Bool[Array, "*batch"]]:
    """Bilinearly sample a depth map at sub-pixel points ``(x, y)``.

    A sample is valid when it lies within the pixel-centre grid (half a pixel inside the image
    border is clamped to the nearest centre) and all four neighbouring depths are finite and
    greater than ``min_depth``. Invalid samples return depth 0 and ``valid = False``; no NaN
    is propagated from invalid pixels.
    """
    depth_map = _as_float(depth_map)
    pixels = jnp.asarray(pixels)
    height, width = depth_map.shape
    # Pixel-centre coordinates: centre of pixel (i, j) is (j + 0.5, i + 0.5).
    u = pixels[..., 0] - 0.5
    v = pixels[..., 1] - 0.5
    inside = (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
    inside &= jnp.isfinite(u) & jnp.isfinite(v)
    u = jnp.clip(jnp.where(jnp.isfinite(u), u, 0.0), 0.0, width - 1.0)
    v = jnp.clip(jnp.where(jnp.isfinite(v), v, 0.0), 0.0, height - 1.0)
    u0 = jnp.clip(jnp.floor(u), 0, max(width - 2, 0)).astype(jnp.int32)
    v0 = jnp.clip(jnp.floor(v), 0, max(height - 2, 0)).astype(jnp.int32)
    u1 = jnp.minimum(u0 + 1, width - 1)
    v1 = jnp.minimum(v0 + 1, height - 1)
    du = (u - u0).astype(depth_map.dtype)
    dv = (v - v0).astype(depth_map.dtype)

    d00, d01 = depth_map[v0, u0], depth_map[v0, u1]
    d10, d11 = depth_map[v1, u0], depth_map[v1, u1]
    corners = jnp.stack([d00, d01, d10, d11], axis=-1)
    weights = jnp.stack([(1 - du) * (1 - dv), du * (1 - dv), (1 - du) * dv, du * dv], axis=-1)
    corner_ok = jnp.isfinite(corners) & (corners > min_depth)
    # A corner with zero weight does not invalidate the sample.
    needed = weights > 0
    valid = inside & jnp.all(corner_ok | ~needed, axis=-1)
    safe = jnp.where(corner_ok, corners, 0.0)
    value = jnp.sum(weights * safe, axis=-1)
    return jnp.where(valid, value, 0.0), valid


def depth_to_points(
    depth_map: Float[Array, "H W"], intrinsics: PinholeIntrinsics
) -> Float[Array, "H W 3"]:
    """Back-project every pixel centre of a depth map to a camera-frame point cloud."""
    depth_map = jnp.asarray(depth_map)
    height, width = depth_map.shape
    ys, xs = jnp.meshgrid(
        jnp.arange(height, dtype=depth_map.dtype) + 0.5,
        jnp.arange(width, dtype=depth_map.dtype) + 0.5,
        indexing="ij",
    )
    return unproject(jnp.stack([xs, ys], axis=-1), depth_map, intrinsics)


def pixel_centers(height: int, width: int, dtype=jnp.float32) -> Float[Array, "H W 2"]:
    """The (x, y) coordinates of every pixel centre."""
    ys, xs = jnp.meshgrid(
        jnp.arange(height, dtype=dtype) + 0.5, jnp.arange(width, dtype=dtype) + 0.5, indexing="ij"
    )
    return jnp.stack([xs, ys], axis=-1)


OPENCV_FROM_MUJOCO_CAMERA = jaxlie.SE3(
    # A half turn about x (diag(1, -1, -1)) as wxyz_xyz; a NumPy array, so that importing jflow
    # does not start JAX before an entry point has chosen its XLA flags.
    wxyz_xyz=np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
)
"""MuJoCo cameras look along -z with y up; OpenCV's look along +z with y down.

``world_from_opencv_camera = world_from_mujoco_camera @ OPENCV_FROM_MUJOCO_CAMERA.inverse()``;
the transform is its own inverse (a rotation by pi about x).
"""

__all__ = [
    "OPENCV_FROM_MUJOCO_CAMERA",
    "PinholeIntrinsics",
    "depth_to_points",
    "in_image",
    "pixel_centers",
    "project",
    "project_world",
    "sample_depth",
    "unproject",
    "unproject_to_world",
]
