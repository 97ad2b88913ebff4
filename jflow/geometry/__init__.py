"""Geometry: pinhole cameras, SE(3) point transforms, rigid fits and point sampling."""

from jflow.geometry.camera import (
    OPENCV_FROM_MUJOCO_CAMERA,
    PinholeIntrinsics,
    depth_to_points,
    in_image,
    pixel_centers,
    project,
    project_world,
    sample_depth,
    unproject,
    unproject_to_world,
)
from jflow.geometry.rigid import (
    DEFAULT_COLLINEAR_TOL,
    RigidFit,
    apply_rigid_fit,
    rigid_fit,
    rigid_fit_or_raise,
    robust_rigid_fit,
)
from jflow.geometry.sampling import farthest_point_sampling
from jflow.geometry.transforms import se3_from_matrix, transform_points, transform_points_batched

__all__ = [
    "DEFAULT_COLLINEAR_TOL",
    "OPENCV_FROM_MUJOCO_CAMERA",
    "PinholeIntrinsics",
    "RigidFit",
    "apply_rigid_fit",
    "depth_to_points",
    "farthest_point_sampling",
    "in_image",
    "pixel_centers",
    "project",
    "project_world",
    "rigid_fit",
    "rigid_fit_or_raise",
    "robust_rigid_fit",
    "sample_depth",
    "se3_from_matrix",
    "transform_points",
    "transform_points_batched",
    "unproject",
    "unproject_to_world",
]
