"""Synthetic rigid object flows for tests and benchmarks: a door on a hinge, a drawer slide, a
kettle lifted and carried. Each is a random object point cloud moved by a smooth SE(3)
trajectory, in the world frame of the Franka Kitchen (meters, radians), with a grasp pose on
the object that the Panda can reach.
"""

from __future__ import annotations

import jaxlie
import numpy as np

from jflow.errors import UnknownNameError
from jflow.flow.records import ObjectFlow

MOTIONS = ("hinge", "slide", "lift_carry")


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def object_motion(
    kind: str, num_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(world_from_object_0 [4, 4], object_t_from_0 as world-frame motions [T, 4, 4])``.

    The motions are smooth (a cosine ease from rest to rest); ``motions[0]`` is the identity.
    """
    s = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, num_frames))  # ease in / out, 0 -> 1
    start = np.eye(4)
    motions = np.tile(np.eye(4), (num_frames, 1, 1))
    if kind == "hinge":  # a cabinet door opening about a vertical hinge
        center = np.array([-0.45, 0.45, 2.05]) + rng.uniform(-0.05, 0.05, 3)
        hinge = center + np.array([0.18, 0.0, 0.0])
        angle = rng.uniform(0.6, 1.2)
        start[:3, 3] = center
        for t in range(num_frames):
            r = _rot(np.array([0.0, 0.0, 1.0]), -angle * s[t])
            motions[t, :3, :3] = r
            motions[t, :3, 3] = hinge - r @ hinge
    elif kind == "slide":  # a sliding cabinet door or drawer
        start[:3, 3] = np.array([0.1, 0.5, 2.1]) + rng.uniform(-0.05, 0.05, 3)
        direction = np.array([1.0, rng.uniform(-0.1, 0.1), 0.0])
        direction /= np.linalg.norm(direction)
        length = rng.uniform(0.15, 0.3)
        motions[:, :3, 3] = s[:, None] * length * direction
    elif kind == "lift_carry":  # lift, carry and set down, with a small yaw
        start[:3, 3] = np.array([-0.27, 0.35, 1.7]) + rng.uniform(-0.05, 0.05, 3)
        carry = np.array([0.0, rng.uniform(0.15, 0.3), 0.0])
        lift = 0.12 * np.sin(np.pi * s)
        yaw = rng.uniform(-0.4, 0.4)
        for t in range(num_frames):
            r = _rot(np.array([0.0, 0.0, 1.0]), yaw * s[t])
            c = start[:3, 3]
            motions[t, :3, :3] = r
            motions[t, :3, 3] = c - r @ c + s[t] * carry + np.array([0.0, 0.0, lift[t]])
    else:
        raise UnknownNameError("motion", kind, MOTIONS)
    return start, motions


def synthetic_rigid_flow(
    kind: str,
    *,
    num_frames: int = 12,
    num_points: int = 64,
    seed: int = 0,
    occlusion: float = 0.0,
) -> tuple[ObjectFlow, jaxlie.SE3, np.ndarray]:
    """A world-frame :class:`ObjectFlow` of a random box-shaped object moved rigidly.

    Returns ``(flow, grasp, motions)``: ``grasp`` is a ``world_from_ee`` pose on the object's
    surface (approach along world +y, towards the kitchen), ``motions`` the true
    ``[T, 4, 4]`` world-frame motions. ``occlusion`` hides that fraction of points per frame
    (never at frame 0).
    """
    rng = np.random.default_rng(seed)
    start, motions = object_motion(kind, num_frames, rng)
    half = np.array([0.08, 0.03, 0.1])
    local = rng.uniform(-half, half, size=(num_points, 3))
    p0 = local @ start[:3, :3].T + start[:3, 3]
    points = np.einsum("tij,nj->tni", motions[:, :3, :3], p0) + motions[:, None, :3, 3]
    visible = rng.uniform(size=(num_frames, num_points)) >= occlusion
    visible[0] = True
    # The gripper approaches along +y (z axis of the EE), fingers closing along x.
    rot = np.stack(
        [np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])], 1
    )
    grasp_pos = start[:3, 3] - np.array([0.0, half[1], 0.0])
    grasp = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(rot.astype(np.float32)), grasp_pos.astype(np.float32)
    )
    t, n = points.shape[:2]
    flow = ObjectFlow(
        points=points.astype(np.float32),
        visible=visible,
        tracks=np.zeros((t, n, 2), np.float32),
        depth=np.ones((t, n), np.float32),
        frame="world",
    )
    return flow, grasp, motions


__all__ = ["MOTIONS", "object_motion", "synthetic_rigid_flow"]
