"""Task-aware grasps (3DFlowAction section 4.2): candidates, then keep the reachable ones.

Candidates come from :func:`antipodal_grasps` on the object's point cloud (normals from depth,
:func:`normals_from_depth`), or from a grasp detector in AnyGrasp's output format
(:func:`from_anygrasp`). Each candidate is moved with the object's motion fitted to the flow and
kept only if the arm reaches it at the first, an intermediate and the last step
(:func:`filter_reachable_grasps`, one batched MJX IK call).

Grasp poses are ``world_from_ee`` in the Panda end-effector convention (jflow.robots.panda): the
site between the fingertips, z = approach direction, y = the direction the fingers close along.
AnyGrasp / graspnetAPI poses use x = approach, y = closing (width) direction; ``from_anygrasp``
converts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np

from jflow.errors import ConfigError, GeometryError, ShapeError
from jflow.flow.records import ObjectFlow
from jflow.geometry.camera import PinholeIntrinsics, depth_to_points
from jflow.geometry.rigid import rigid_fit
from jflow.geometry.sampling import farthest_point_sampling
from jflow.planning.reachability import IKResult, PandaReachability
from jflow.robots import panda
from jflow.runtime import planning_jit

ANYGRASP_FROM_EE = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
"""Rotation ``anygrasp_from_ee``: EE z = AnyGrasp x (approach), EE y = AnyGrasp y (closing)."""


@dataclasses.dataclass(frozen=True)
class GraspCandidates:
    """``G`` grasps: ``poses [G, 4, 4]`` world_from_ee, ``widths [G]`` (m), ``scores [G]``."""

    poses: np.ndarray
    widths: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        g = np.shape(self.poses)[0] if np.ndim(self.poses) == 3 else -1
        if (
            np.shape(self.poses)[1:] != (4, 4)
            or np.shape(self.widths) != (g,)
            or np.shape(self.scores) != (g,)
        ):
            raise ShapeError(
                f"grasps need poses [G, 4, 4], widths [G], scores [G]; got {np.shape(self.poses)}, "
                f"{np.shape(self.widths)}, {np.shape(self.scores)}"
            )

    def __len__(self) -> int:
        return int(np.shape(self.poses)[0])

    def take(self, index) -> GraspCandidates:
        return GraspCandidates(self.poses[index], self.widths[index], self.scores[index])


def from_anygrasp(
    rotations: np.ndarray,
    translations: np.ndarray,
    widths: np.ndarray,
    scores: np.ndarray,
    world_from_camera: jaxlie.SE3 | None = None,
) -> GraspCandidates:
    """Candidates from AnyGrasp's output (``rotation_matrices [G, 3, 3]``, ``translations
    [G, 3]``, ``widths``, ``scores``), in the camera frame unless ``world_from_camera`` is None."""
    rot = np.asarray(rotations, np.float64)
    trans = np.asarray(translations, np.float64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3) or trans.shape != (rot.shape[0], 3):
        raise ShapeError(
            f"AnyGrasp poses need rotations [G, 3, 3] and translations [G, 3], got {rot.shape}, {trans.shape}"
        )
    poses = np.tile(np.eye(4), (rot.shape[0], 1, 1))
    poses[:, :3, :3] = rot @ ANYGRASP_FROM_EE
    poses[:, :3, 3] = trans
    if world_from_camera is not None:
        poses = np.asarray(world_from_camera.as_matrix(), np.float64) @ poses
    return GraspCandidates(poses, np.asarray(widths, np.float64), np.asarray(scores, np.float64))


def normals_from_depth(
    depth: np.ndarray, intrinsics: PinholeIntrinsics
) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points ``[H, W, 3]`` and unit normals ``[H, W, 3]`` from a depth map.

    Normals are the cross product of central differences of the back-projected points, turned
    towards the camera; pixels whose 4 neighbours lack depth get a zero normal.
    """
    depth = np.asarray(depth, np.float32)
    pts = np.asarray(depth_to_points(jnp.asarray(depth), intrinsics))
    ok = np.isfinite(depth) & (depth > 0)
    dx = np.zeros_like(pts)
    dy = np.zeros_like(pts)
    dx[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dy[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(dx, dy)
    good = np.zeros_like(ok)
    good[1:-1, 1:-1] = ok[1:-1, 1:-1] & ok[1:-1, 2:] & ok[1:-1, :-2] & ok[2:, 1:-1] & ok[:-2, 1:-1]
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    good &= norm[..., 0] > 0
    n = np.where(good[..., None], n / np.maximum(norm, 1e-12), 0.0)
    flip = np.sum(n * pts, axis=-1) > 0  # must point back at the camera (at the origin)
    n[flip] *= -1
    return pts, n


def antipodal_grasps(
    points: np.ndarray,
    normals: np.ndarray,
    *,
    num_candidates: int = 32,
    max_width: float = panda.MAX_GRASP_WIDTH,
    min_width: float = 0.005,
    friction_deg: float = 20.0,
    approach_hint: tuple[float, float, float] = (0.0, 0.0, -1.0),
    seed: int = 0,
    max_anchors: int = 512,
) -> GraspCandidates:
    """Antipodal grasps on an oriented point cloud (world or camera frame, outward normals).

    For random anchor points ``p_i`` the partner ``p_j`` is the point whose line from ``p_i``
    lies within the friction cone around ``-n_i`` (the inward normal), whose normal is within
    the cone of ``-n_i`` reversed (opposite surfaces), and whose distance is in
    ``[min_width, max_width]``. The grasp sits at the midpoint, closes along ``p_j - p_i`` (EE y)
    and approaches along the direction perpendicular to it closest to ``approach_hint`` (EE z,
    default straight down). The score is the mean cosine of the two contact angles; candidates
    come back best first, at most ``num_candidates``.
    """
    pts = np.asarray(points, np.float64)
    nrm = np.asarray(normals, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or nrm.shape != pts.shape:
        raise ShapeError(f"points and normals must both be [P, 3], got {pts.shape}, {nrm.shape}")
    keep = np.all(np.isfinite(pts), 1) & (np.linalg.norm(nrm, axis=1) > 0.5)
    pts, nrm = pts[keep], nrm[keep]
    if len(pts) < 2:
        raise GeometryError(
            f"antipodal sampling needs oriented points; got {len(pts)} with normals"
        )
    rng = np.random.default_rng(seed)
    anchors = rng.permutation(len(pts))[:max_anchors]
    cos_f = np.cos(np.radians(friction_deg))
    hint = np.asarray(approach_hint, np.float64)
    out_poses, out_w, out_s = [], [], []
    for i in anchors:
        v = pts - pts[i]
        dist = np.linalg.norm(v, axis=1)
        ok = (dist >= min_width) & (dist <= max_width)
        if not ok.any():
            continue
        u = v / np.maximum(dist, 1e-12)[:, None]
        a1 = u @ -nrm[i]  # line within the cone of the inward normal at p_i
        a2 = np.sum(u * nrm, axis=1)  # outward normal at p_j points along the line
        ok &= (a1 >= cos_f) & (a2 >= cos_f)
        if not ok.any():
            continue
        score = 0.5 * (a1 + a2)
        j = int(np.argmax(np.where(ok, score, -np.inf)))
        y = u[j]
        z = hint - (hint @ y) * y
        if np.linalg.norm(z) < 1e-3:
            z = np.cross(y, [1.0, 0.0, 0.0] if abs(y[0]) < 0.9 else [0.0, 1.0, 0.0])
        z /= np.linalg.norm(z)
        x = np.cross(y, z)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([x, y, z], axis=1)
        pose[:3, 3] = 0.5 * (pts[i] + pts[j])
        out_poses.append(pose)
        out_w.append(dist[j])
        out_s.append(score[j])
    if not out_poses:
        raise GeometryError(
            "no antipodal pair found: the point cloud has no opposing surfaces within the gripper width"
        )
    order = np.argsort(-np.asarray(out_s))[:num_candidates]
    return GraspCandidates(
        np.asarray(out_poses)[order], np.asarray(out_w)[order], np.asarray(out_s)[order]
    )


def surface_grasps(
    points: np.ndarray,
    normals: np.ndarray,
    *,
    num_candidates: int = 32,
    depth: float = 0.02,
    closing_hint: tuple[float, float, float] = (0.0, 0.0, 1.0),
    seed: int = 0,
) -> GraspCandidates:
    """Grasps that approach a visible surface head-on: the fallback when a single view shows no
    opposing surfaces (a door or a drawer front seen from the front).

    At ``num_candidates`` points spread by farthest point sampling, the gripper approaches along
    the inward normal (EE z = ``-n``), its centre ``depth`` meters behind the surface, closing
    along the direction perpendicular to ``n`` nearest ``closing_hint`` (default vertical, to
    pinch a horizontal edge or handle). Scores are the normals' agreement with their
    neighbourhood (flat, well-measured patches first); widths are the gripper's maximum.
    """
    pts = np.asarray(points, np.float64)
    nrm = np.asarray(normals, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or nrm.shape != pts.shape:
        raise ShapeError(f"points and normals must both be [P, 3], got {pts.shape}, {nrm.shape}")
    keep = np.all(np.isfinite(pts), 1) & (np.linalg.norm(nrm, axis=1) > 0.5)
    pts, nrm = pts[keep], nrm[keep]
    if len(pts) == 0:
        raise GeometryError("surface grasps need points with normals; got none")
    k = min(num_candidates, len(pts))
    idx = np.asarray(farthest_point_sampling(jnp.asarray(pts, jnp.float32), k))
    hint = np.asarray(closing_hint, np.float64)
    poses, scores = [], []
    for i in idx:
        z = -nrm[i] / np.linalg.norm(nrm[i])
        y = hint - (hint @ z) * z
        if np.linalg.norm(y) < 1e-3:
            y = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
        y /= np.linalg.norm(y)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([np.cross(y, z), y, z], axis=1)
        pose[:3, 3] = pts[i] + depth * z
        near = np.linalg.norm(pts - pts[i], axis=1) < 0.02
        scores.append(float(np.mean(nrm[near] @ nrm[i])))
        poses.append(pose)
    order = np.argsort(-np.asarray(scores), kind="stable")
    return GraspCandidates(
        np.asarray(poses)[order],
        np.full(len(order), panda.MAX_GRASP_WIDTH),
        np.asarray(scores)[order],
    )


def object_motions(flow: ObjectFlow) -> jaxlie.SE3:
    """Per-frame rigid motions ``[T]`` of a world-frame flow (frame t from frame 0, world)."""
    pts = jnp.asarray(np.nan_to_num(np.asarray(flow.points, np.float32)))
    vis = jnp.asarray(flow.visible) & jnp.asarray(flow.visible[:1])
    fits = _fits(pts[0], pts, vis)
    if not bool(np.all(np.asarray(fits.valid))):
        bad = np.flatnonzero(~np.asarray(fits.valid)).tolist()
        raise GeometryError(
            f"cannot fit the object's motion at frames {bad}: fewer than 3 points visible there and at frame 0, or degenerate"
        )
    return fits.target_from_source


_fits = planning_jit(jax.vmap(rigid_fit, in_axes=(None, 0, 0)))


@dataclasses.dataclass(frozen=True)
class ReachableGrasps:
    """Which candidates the arm reaches at every checked step."""

    candidates: GraspCandidates
    steps: tuple[int, ...]
    reachable: np.ndarray
    """``[G, S]``: reached at each checked step."""
    ik: IKResult
    """IK solutions ``[G, S]``."""

    @property
    def indices(self) -> np.ndarray:
        """Candidates reachable at every step, best score first."""
        ok = np.flatnonzero(self.reachable.all(axis=1))
        return ok[np.argsort(-self.candidates.scores[ok], kind="stable")]

    def best(self) -> int:
        """The best-scoring candidate reachable at every step; raises GeometryError if none."""
        idx = self.indices
        if idx.size == 0:
            per_step = ", ".join(
                f"step {s}: {int(n)}"
                for s, n in zip(self.steps, self.reachable.sum(0), strict=True)
            )
            raise GeometryError(
                f"no reachable grasp: none of the {len(self.candidates)} candidates is reachable at every step ({per_step} reachable)"
            )
        return int(idx[0])


def filter_reachable_grasps(
    candidates: GraspCandidates,
    motions: jaxlie.SE3,
    checker: PandaReachability,
    steps: tuple[int, ...] | None = None,
) -> ReachableGrasps:
    """Move each grasp with the object (``motions[t] @ grasp``) and check reachability at
    ``steps`` (default: first, middle and last) in one batched IK call."""
    t = int(np.shape(motions.wxyz_xyz)[0])
    steps = (0, t // 2, t - 1) if steps is None else tuple(int(s) for s in steps)
    if any(not 0 <= s < t for s in steps):
        raise ConfigError(f"steps {steps} outside the {t} frames of the motion")
    if len(candidates) == 0:
        raise GeometryError("no grasp candidates to check")
    grasps = jaxlie.SE3.from_matrix(jnp.asarray(candidates.poses, jnp.float32))
    moved = jaxlie.SE3(jnp.asarray(motions.wxyz_xyz, jnp.float32)[jnp.asarray(steps)])
    poses = jax.vmap(lambda g: jax.vmap(lambda m: m @ g)(moved))(grasps)  # [G, S]
    ik = checker(poses)
    return ReachableGrasps(candidates, steps, np.asarray(ik.reachable), ik)


__all__ = [
    "ANYGRASP_FROM_EE",
    "GraspCandidates",
    "ReachableGrasps",
    "antipodal_grasps",
    "filter_reachable_grasps",
    "from_anygrasp",
    "normals_from_depth",
    "object_motions",
    "surface_grasps",
]
