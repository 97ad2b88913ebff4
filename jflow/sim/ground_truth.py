"""Ground-truth 3D flow: surface points on an object's geoms, moved by the simulator.

Points are sampled once, area-weighted, on the rendered geoms of an object (mesh triangles and
primitive surfaces) and stored in their body's frame; each frame they are moved by the body's
simulated pose. A point is *visible* in a view when it projects inside the image, lies in front
of the camera, passes the depth test ``|z_point - depth(px)| < tol`` against the rendered depth
at its nearest pixel, and (optionally) that pixel's segmentation id is the object's.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from jflow.errors import ConfigError
from jflow.sim import kitchen_constants as kc
from jflow.sim.model import KitchenModel


@dataclasses.dataclass(frozen=True)
class SurfacePoints:
    """``N`` points fixed on an object: ``body_ids [N]``, ``local [N, 3]`` positions and
    ``normals [N, 3]`` (unit, sign arbitrary) in their body frames."""

    object_name: str
    body_ids: np.ndarray
    local: np.ndarray
    normals: np.ndarray

    def world_normals(self, data: mujoco.MjData) -> np.ndarray:
        """``[N, 3]`` world-frame surface normals under ``data``'s kinematics."""
        rot = data.xmat[self.body_ids].reshape(-1, 3, 3)
        return np.einsum("nij,nj->ni", rot, self.normals)

    def world(self, data: mujoco.MjData) -> np.ndarray:
        """``[N, 3]`` world positions under ``data``'s kinematics."""
        rot = data.xmat[self.body_ids].reshape(-1, 3, 3)
        return np.einsum("nij,nj->ni", rot, self.local) + data.xpos[self.body_ids]


def _triangle_points(v0, v1, v2, rng, n):
    r1 = np.sqrt(rng.random(n))[:, None]
    r2 = rng.random(n)[:, None]
    return (1 - r1) * v0 + r1 * (1 - r2) * v1 + r1 * r2 * v2


def _mesh_surface(model: mujoco.MjModel, geom: int):
    mesh = int(model.geom_dataid[geom])
    vadr, vnum = int(model.mesh_vertadr[mesh]), int(model.mesh_vertnum[mesh])
    fadr, fnum = int(model.mesh_faceadr[mesh]), int(model.mesh_facenum[mesh])
    verts = np.asarray(model.mesh_vert[vadr : vadr + vnum], np.float64)
    faces = np.asarray(model.mesh_face[fadr : fadr + fnum], np.int64)
    tri = verts[faces]  # [F, 3, 3] in the geom frame
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return tri, area


def _geom_area(model: mujoco.MjModel, geom: int) -> float:
    t = int(model.geom_type[geom])
    s = model.geom_size[geom]
    if t == mujoco.mjtGeom.mjGEOM_MESH:
        return float(_mesh_surface(model, geom)[1].sum())
    if t == mujoco.mjtGeom.mjGEOM_BOX:
        return float(8 * (s[0] * s[1] + s[1] * s[2] + s[0] * s[2]))
    if t == mujoco.mjtGeom.mjGEOM_SPHERE:
        return float(4 * np.pi * s[0] ** 2)
    if t == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return float(4 * np.pi * s[0] ** 2 + 2 * np.pi * s[0] * 2 * s[1])
    if t == mujoco.mjtGeom.mjGEOM_CYLINDER:
        return float(2 * np.pi * s[0] ** 2 + 2 * np.pi * s[0] * 2 * s[1])
    if t == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
        a, b, c = s
        p = 1.6075
        return float(4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p))
    return 0.0  # planes and others are not sampled


def _unit_vectors(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sample_geom(
    model: mujoco.MjModel, geom: int, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly on the surface of ``geom`` and their unit normals, in the geom's frame
    (mesh normals may point either way: only their line is used)."""
    t = int(model.geom_type[geom])
    s = np.asarray(model.geom_size[geom], np.float64)
    if t == mujoco.mjtGeom.mjGEOM_MESH:
        tri, area = _mesh_surface(model, geom)
        idx = rng.choice(len(tri), size=n, p=area / area.sum())
        normal = np.cross(tri[idx, 1] - tri[idx, 0], tri[idx, 2] - tri[idx, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        return _triangle_points(tri[idx, 0], tri[idx, 1], tri[idx, 2], rng, n), normal
    if t == mujoco.mjtGeom.mjGEOM_BOX:
        face_areas = np.array(
            [s[1] * s[2], s[1] * s[2], s[0] * s[2], s[0] * s[2], s[0] * s[1], s[0] * s[1]]
        )
        face = rng.choice(6, size=n, p=face_areas / face_areas.sum())
        p = rng.uniform(-1, 1, (n, 3)) * s
        axis = face // 2
        sign = np.where(face % 2 == 0, 1.0, -1.0)
        p[np.arange(n), axis] = sign * s[axis]
        normal = np.zeros((n, 3))
        normal[np.arange(n), axis] = sign
        return p, normal
    if t == mujoco.mjtGeom.mjGEOM_SPHERE:
        u = _unit_vectors(rng, n)
        return u * s[0], u
    if t == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
        u = _unit_vectors(rng, n)  # approximately uniform; ellipsoids are rare here
        normal = u / s
        return u * s, normal / np.linalg.norm(normal, axis=1, keepdims=True)
    if t in (mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_CYLINDER):
        r, h = s[0], s[1]
        side = 2 * np.pi * r * 2 * h
        ends = 4 * np.pi * r**2 if t == mujoco.mjtGeom.mjGEOM_CAPSULE else 2 * np.pi * r**2
        on_side = rng.random(n) < side / (side + ends)
        theta = rng.uniform(0, 2 * np.pi, n)
        p = np.stack([r * np.cos(theta), r * np.sin(theta), rng.uniform(-h, h, n)], axis=1)
        normal = np.stack([np.cos(theta), np.sin(theta), np.zeros(n)], axis=1)
        k = int((~on_side).sum())
        if t == mujoco.mjtGeom.mjGEOM_CAPSULE:
            u = _unit_vectors(rng, k) * r
            u[:, 2] = np.abs(u[:, 2])
            top = rng.random(k) < 0.5
            cap_normal = u / r
            cap_normal[:, 2] = np.where(top, cap_normal[:, 2], -cap_normal[:, 2])
            u[:, 2] = np.where(top, u[:, 2] + h, -u[:, 2] - h)
        else:
            rad = r * np.sqrt(rng.random(k))
            th = rng.uniform(0, 2 * np.pi, k)
            top = rng.random(k) < 0.5
            u = np.stack([rad * np.cos(th), rad * np.sin(th), np.where(top, h, -h)], axis=1)
            cap_normal = np.zeros((k, 3))
            cap_normal[:, 2] = np.where(top, 1.0, -1.0)
        p[~on_side] = u
        normal[~on_side] = cap_normal
        return p, normal
    raise ConfigError(f"cannot sample points on geom type {t}")


def sample_surface_points(
    kitchen: KitchenModel, object_name: str, num_points: int, rng: np.random.Generator
) -> SurfacePoints:
    """``num_points`` points area-weighted over the rendered, opaque geoms of ``object_name``."""
    if num_points <= 0:
        raise ConfigError(f"num_points must be positive, got {num_points}")
    if object_name not in kc.SEGMENTATION_IDS:
        from jflow.errors import UnknownNameError  # noqa: PLC0415

        raise UnknownNameError("object", object_name, kc.SEGMENTATION_OBJECTS)
    model = kitchen.model
    geoms = [g for g in kitchen.visual_geoms[object_name] if _geom_area(model, g) > 0]
    if not geoms:
        raise ConfigError(f"object {object_name!r} has no surface to sample")
    areas = np.array([_geom_area(model, g) for g in geoms])
    choice = rng.choice(len(geoms), size=num_points, p=areas / areas.sum())
    local = np.zeros((num_points, 3))
    normals = np.zeros((num_points, 3))
    body_ids = np.zeros(num_points, np.int64)
    for i, g in enumerate(geoms):
        sel = np.flatnonzero(choice == i)
        if not len(sel):
            continue
        p_geom, n_geom = _sample_geom(model, g, rng, len(sel))
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.geom_quat[g])
        local[sel] = p_geom @ rot.reshape(3, 3).T + model.geom_pos[g]
        normals[sel] = n_geom @ rot.reshape(3, 3).T
        body_ids[sel] = int(model.geom_bodyid[g])
    return SurfacePoints(object_name, body_ids, local, normals)


def project_points(points_world: np.ndarray, world_from_camera: np.ndarray, fx, fy, cx, cy):
    """Pixels ``[N, 2]`` (x, y) and camera depth ``[N]`` of world points (OpenCV camera)."""
    rot, trans = world_from_camera[:3, :3], world_from_camera[:3, 3]
    cam = (points_world - trans) @ rot
    z = cam[:, 2]
    safe = np.where(np.abs(z) > 1e-9, z, 1e-9)
    px = np.stack([fx * cam[:, 0] / safe + cx, fy * cam[:, 1] / safe + cy], axis=1)
    return px, z


def slope_factor(
    points_world: np.ndarray, normals_world: np.ndarray, camera_center: np.ndarray
) -> np.ndarray:
    """``|tan|`` of the angle between each surface normal and its viewing ray, capped at
    ``kitchen_constants.DEPTH_SLOPE_CAP``: how fast depth changes across the surface in pixels."""
    ray = points_world - camera_center
    ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-12)
    cos = np.abs(np.sum(ray * normals_world, axis=1))
    sin = np.sqrt(np.clip(1.0 - cos**2, 0.0, 1.0))
    return np.minimum(sin / np.maximum(cos, 1e-6), kc.DEPTH_SLOPE_CAP)


def depth_map_normals(
    depth_map: np.ndarray, fx: float, fy: float, cx: float, cy: float
) -> np.ndarray:
    """Unit camera-frame surface normals ``[H, W, 3]`` of a depth map (central differences of
    the back-projected points; garbage across depth edges, which the normal test then rejects)."""
    h, w = depth_map.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    d = depth_map.astype(np.float64)
    pts = np.stack([(xs - cx) / fx * d, (ys - cy) / fy * d, d], axis=-1)
    du = np.gradient(pts, axis=1)
    dv = np.gradient(pts, axis=0)
    n = np.cross(du, dv)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def depth_test_visibility(
    pixels: np.ndarray,
    z: np.ndarray,
    depth_map: np.ndarray,
    focal: float,
    slope: np.ndarray | float = 1.0,
    tolerance: float = kc.DEPTH_TOLERANCE,
    per_pixel: float = kc.DEPTH_TOLERANCE_PER_PIXEL,
    normals_cam: np.ndarray | None = None,
    map_normals: np.ndarray | None = None,
    min_normal_cos: float = kc.DEPTH_NORMAL_MIN_COS,
) -> tuple[np.ndarray, np.ndarray]:
    """In-image and depth-test visibility. Returns ``(visible [N] bool, pixel_index [N, 2] (row, col))``.

    The rendered depth is read at the point's own pixel (no interpolation across edges). The
    tolerance is ``tolerance + per_pixel * slope * z / focal``: the depth change across
    ``per_pixel`` pixels of a surface whose normal makes an angle with ``|tan| = slope`` with
    the viewing ray (see :func:`slope_factor`). If ``normals_cam [N, 3]`` (the points' camera-frame
    normals) and ``map_normals [H, W, 3]`` (:func:`depth_map_normals`) are given, the surface
    seen at the pixel must also be oriented like the point's (``|cos| >= min_normal_cos``):
    this rejects points on the sides of small parts whose pixel shows the surface they are
    mounted on, at the same depth.
    """
    h, w = depth_map.shape
    col = np.floor(pixels[:, 0]).astype(np.int64)
    row = np.floor(pixels[:, 1]).astype(np.int64)
    inside = (z > 1e-6) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    inside &= np.isfinite(pixels).all(axis=1)
    rc = np.stack([np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)], axis=1)
    rendered = depth_map[rc[:, 0], rc[:, 1]]
    tol = tolerance + per_pixel * np.asarray(slope) * np.abs(z) / focal
    visible = inside & (np.abs(rendered - z) < tol)
    if normals_cam is not None and map_normals is not None:
        seen = map_normals[rc[:, 0], rc[:, 1]]
        visible &= np.abs(np.sum(seen * normals_cam, axis=1)) >= min_normal_cos
    return visible, rc


def visibility(
    pixels: np.ndarray,
    z: np.ndarray,
    depth_map: np.ndarray,
    segmentation: np.ndarray,
    object_id: int,
    focal: float,
    slope: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Depth test AND the point's pixel is segmented as ``object_id``: ``[N]`` bool."""
    vis, rc = depth_test_visibility(pixels, z, depth_map, focal, slope)
    return vis & (segmentation[rc[:, 0], rc[:, 1]] == object_id)
