"""Z-buffered point splatting: render a coloured point cloud into a pinhole camera.

3DFlowAction section 4.1 renders the predicted end of a task by moving the object's point cloud
with the rigid transform fitted to the flow and re-projecting the scene into the camera. Each
point covers the ``(2 r + 1)^2`` pixels around the pixel it projects into (``r = radius``); each
pixel takes the colour of its nearest point (smallest camera depth ``z``; exact ties are
averaged). Pixels no point covers are ``filled = False`` and hold ``background``.

Conventions (docs/conventions.md): OpenCV camera frame, pixel (x, y) with (0, 0) the top-left
corner, so a point projecting to ``(x, y)`` lands in row ``floor(y)``, column ``floor(x)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax_dataclasses as jdc
import jaxlie
from jaxtyping import Array, Bool, Float

from jflow.geometry.camera import PinholeIntrinsics, depth_to_points, project
from jflow.geometry.transforms import transform_points


@jdc.pytree_dataclass
class SplatImage:
    """A rendered image ``[H, W, C]``, its depth ``[H, W]`` (0 where empty) and coverage."""

    image: Float[Array, "H W C"]
    depth: Float[Array, "H W"]
    filled: Bool[Array, "H W"]


@functools.partial(jax.jit, static_argnames=("radius",))
def splat_points(
    points_cam: Float[Array, "P 3"],
    colors: Float[Array, "P C"],
    valid: Bool[Array, " P"],
    intrinsics: PinholeIntrinsics,
    radius: int = 0,
    background: float = 0.0,
) -> SplatImage:
    """Z-buffered splat of camera-frame points (module docs). Points with ``z <= 0``, outside
    the image or ``valid = False`` are dropped."""
    h, w = intrinsics.height, intrinsics.width
    pix, z = project(points_cam, intrinsics)
    col = jnp.floor(pix[:, 0]).astype(jnp.int32)
    row = jnp.floor(pix[:, 1]).astype(jnp.int32)
    offsets = jnp.arange(-radius, radius + 1)
    dr, dc = jnp.meshgrid(offsets, offsets, indexing="ij")
    rows = (row[:, None] + dr.ravel()[None]).ravel()
    cols = (col[:, None] + dc.ravel()[None]).ravel()
    k = (2 * radius + 1) ** 2
    zz = jnp.repeat(z, k)
    ok = jnp.repeat(valid & jnp.isfinite(z) & (z > 0), k)
    ok &= (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    dump = h * w
    idx = jnp.where(ok, rows * w + cols, dump)
    zbuf = jax.ops.segment_min(jnp.where(ok, zz, jnp.inf), idx, num_segments=dump + 1)
    win = ok & (zz <= zbuf[idx])
    cc = jnp.repeat(colors, k, axis=0)
    total = jax.ops.segment_sum(jnp.where(win[:, None], cc, 0.0), idx, num_segments=dump + 1)
    count = jax.ops.segment_sum(win.astype(cc.dtype), idx, num_segments=dump + 1)
    filled = count[:dump] > 0
    image = jnp.where(
        filled[:, None], total[:dump] / jnp.maximum(count[:dump], 1)[:, None], background
    )
    depth = jnp.where(filled, zbuf[:dump], 0.0)
    return SplatImage(
        image=image.reshape(h, w, -1), depth=depth.reshape(h, w), filled=filled.reshape(h, w)
    )


@functools.partial(jax.jit, static_argnames=("radius", "remove_original"))
def render_moved_object(
    rgb: Float[Array, "H W 3"],
    depth: Float[Array, "H W"],
    object_mask: Bool[Array, "H W"],
    intrinsics: PinholeIntrinsics,
    object_motion_cam: jaxlie.SE3,
    radius: int = 1,
    remove_original: bool = True,
) -> SplatImage:
    """Render the scene with the object moved by ``object_motion_cam`` (camera frame).

    The current RGB-D view is lifted to a point cloud; the object's points (``object_mask`` and
    positive depth) are moved by ``object_motion_cam`` (``camera_from_camera``: for a world-frame
    object motion ``M`` it is ``camera_from_world @ M @ world_from_camera``) and the whole cloud
    is splatted back into the same camera. With ``remove_original`` the object's points at the
    start are dropped (the places it uncovers become empty unless something lies behind).
    Background points are splatted at radius 0 (they already cover their own pixel); the moved
    object at ``radius`` so that it has no holes when it comes closer to the camera.
    """
    pts = depth_to_points(depth, intrinsics).reshape(-1, 3)
    col = jnp.asarray(rgb, jnp.float32).reshape(-1, rgb.shape[-1])
    d = depth.reshape(-1)
    m = object_mask.reshape(-1)
    has_depth = jnp.isfinite(d) & (d > 0)
    scene_valid = has_depth & (~m if remove_original else True)
    moved = transform_points(object_motion_cam, pts)
    back = splat_points(pts, col, scene_valid, intrinsics, 0)
    obj = splat_points(moved, col, has_depth & m, intrinsics, radius)
    nearer = obj.filled & (~back.filled | (obj.depth < back.depth))
    return SplatImage(
        image=jnp.where(nearer[..., None], obj.image, back.image),
        depth=jnp.where(nearer, obj.depth, back.depth),
        filled=back.filled | obj.filled,
    )


__all__ = ["SplatImage", "render_moved_object", "splat_points"]
