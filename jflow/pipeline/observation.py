"""What the robot sees of an env state: an RGB-D view, the object's mask and its points.

:class:`KitchenObserver` renders the **env's own state** (``KitchenState.qpos``): the scene that
``KitchenEnv.reset(task, seed)`` drew is not the one ``render_episode(task, seed)`` draws (the two
use different random streams for the object's start, the other objects and the robot), so the
pipeline never renders an episode by its seed; it renders the qpos the simulator is in.

Per episode (:meth:`KitchenObserver.start_episode`) the look of the kitchen is drawn from the
episode's seed as the dataset does (procedural textures, lighting, camera jitter), and ``N``
surface points are sampled on the target object (:func:`jflow.sim.ground_truth.
sample_surface_points`, fixed in their bodies). Each :meth:`~KitchenObserver.observe` then gives

* ``rgb [H, W, 3]`` uint8, ``depth [H, W]`` (m, camera z), ``object_mask [H, W]`` (the target's
  segmentation), ``intrinsics``, ``camera_pose`` (world_from_camera, OpenCV);
* the object's points at the current state, **in grid order** (``jflow.flow.grid.grid_order`` of
  their pixels): ``points [N, 3]`` world (m), ``tracks [N, 2]`` (x, y) pixels, ``depth_points
  [N]`` camera z (m), ``visible [N]`` (depth test and segmentation, as the dataset's ground
  truth). These are the "initial points" the flow model is conditioned on (frame 0 of the grid
  flow), as in training.

The robot is hidden from the view by default (``show_robot=False``): the flow model was trained
on human-style videos without the robot (docs/sim.md), and the Panda stands between every
camera and the kitchen. Set ``show_robot=True`` to see the view with the robot.

:meth:`KitchenObserver.flow_along` moves the same points along a path of the object's joint
values (``[T, k]``) and returns the ground-truth :class:`~jflow.flow.records.ObjectFlow` (world
frame) the oracle method plans with; visibility is the current view's (frame 0) at every frame
(the points' positions are exact at every frame: occlusion later in the motion is not a fact
about the object).
"""

from __future__ import annotations

import dataclasses
import zlib

import jaxlie
import numpy as np
from jaxtyping import Bool, Float, Int, UInt8

from jflow.errors import ConfigError, ShapeError, UnknownNameError
from jflow.flow.grid import grid_order
from jflow.flow.records import ObjectFlow
from jflow.geometry.camera import PinholeIntrinsics
from jflow.sim import kitchen_constants as kc
from jflow.sim.env import KitchenState
from jflow.sim.tasks import Task, get_task


@dataclasses.dataclass(frozen=True)
class KitchenObservation:
    """One view of an env state (module docs). Points are in grid order."""

    rgb: UInt8[np.ndarray, "H W 3"]
    depth: Float[np.ndarray, "H W"]
    object_mask: Bool[np.ndarray, "H W"]
    intrinsics: PinholeIntrinsics
    camera_pose: jaxlie.SE3
    """world_from_camera (OpenCV camera frame)."""
    points: Float[np.ndarray, "N 3"]
    """The object's surface points, world frame (m), grid order."""
    tracks: Float[np.ndarray, "N 2"]
    """Their pixels (x, y)."""
    depth_points: Float[np.ndarray, " N"]
    """Their camera depth z (m)."""
    visible: Bool[np.ndarray, " N"]
    order: Int[np.ndarray, " N"]
    """The grid order: ``points = sampled[order]`` (used by :meth:`KitchenObserver.flow_along`)."""
    task_id: str
    qpos: Float[np.ndarray, " nq"]
    """The state's qpos this view shows."""

    @property
    def world_from_camera(self) -> Float[np.ndarray, "4 4"]:
        return np.asarray(self.camera_pose.as_matrix(), np.float64)

    def plan_observation(self):
        """The planner's :class:`jflow.planning.plan_check.Observation`."""
        from jflow.planning.plan_check import Observation

        return Observation(
            self.rgb, self.depth, self.object_mask, self.intrinsics, self.camera_pose
        )

    def initial_flow(self) -> ObjectFlow:
        """The points as a one-frame world-frame flow."""
        return ObjectFlow(
            points=self.points[None].astype(np.float32),
            visible=self.visible[None],
            tracks=self.tracks[None].astype(np.float32),
            depth=self.depth_points[None].astype(np.float32),
            frame="world",
        )


def observer_rng(task_id: str, seed: int) -> np.random.Generator:
    """The random stream of an episode's look (textures, lights, camera jitter, points)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(task_id.encode()), 11])


class KitchenObserver:
    """Renders env states of one episode at a time (module docs).

    Args:
      resolution: square image size (a multiple of 8); the flow model's dataset resolution.
      camera: ``front``, ``side`` or ``side_right``.
      grid: side of the point grid (``grid * grid`` points, the dataset's grid).
      show_robot: draw the robot in the view.
      randomize: draw the look (textures, lights, camera jitter) from the episode's seed; off,
        the nominal camera and lights (textures are still drawn from the seed).
    """

    def __init__(
        self,
        resolution: int = 128,
        camera: str = "front",
        *,
        grid: int = 16,
        show_robot: bool = False,
        randomize: bool = True,
    ):
        from jflow.sim.episodes import KitchenWorld

        if camera not in kc.CAMERAS:
            raise UnknownNameError("camera", camera, kc.CAMERA_NAMES)
        if grid < 2:
            raise ConfigError(f"grid must be >= 2, got {grid}")
        self.world = KitchenWorld(resolution)
        self.camera = camera
        self.grid = int(grid)
        self.show_robot = show_robot
        self.randomize = randomize
        self.task: Task | None = None
        self._points = None
        self._idx = None

    @property
    def resolution(self) -> int:
        return self.world.resolution

    @property
    def num_points(self) -> int:
        return self.grid * self.grid

    def close(self) -> None:
        self.world.close()

    def __enter__(self) -> KitchenObserver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_episode(self, task_id: str, seed: int) -> None:
        """Draw the episode's look and sample the target object's points."""
        from jflow.sim.cameras import jitter_camera
        from jflow.sim.ground_truth import sample_surface_points

        task = get_task(task_id)
        rng = observer_rng(task_id, seed)
        renderer = self.world.renderer
        renderer.randomize_textures(rng)
        renderer.randomize_lighting(rng, enabled=self.randomize)
        jitter = (
            (kc.CAMERA_POSITION_JITTER, kc.CAMERA_ROTATION_JITTER_DEG)
            if self.randomize
            else (0.0, 0.0)
        )
        jitter_camera(self.world.model, self.camera, rng, *jitter)
        self._points = sample_surface_points(
            self.world.kitchen, task.target_object, self.num_points, rng
        )
        self._idx = self.world.kitchen.qpos_indices(task.joints)
        self.task = task

    def _require_episode(self, state: KitchenState) -> Task:
        if self.task is None:
            raise ConfigError("call start_episode(task_id, seed) before observing")
        if state.task_id != self.task.task_id:
            raise ConfigError(
                f"the observer's episode is {self.task.task_id!r}, the state is of {state.task_id!r}"
            )
        return self.task

    def _camera(self):
        from jflow.sim.cameras import camera_intrinsics, camera_pose, camera_pose_matrix

        model, data = self.world.model, self.world.data
        k = camera_intrinsics(model, self.camera, self.resolution)
        cam_id = model.camera(self.camera).id
        return k, camera_pose(model, data, self.camera), camera_pose_matrix(data, cam_id)

    def observe(self, state: KitchenState) -> KitchenObservation:
        """Render the state's qpos and locate the object's points in the view."""
        from jflow.sim.ground_truth import (
            depth_map_normals,
            depth_test_visibility,
            project_points,
            slope_factor,
        )

        task = self._require_episode(state)
        qpos = np.asarray(state.qpos, np.float64)
        if qpos.shape != (self.world.model.nq,) or not np.all(np.isfinite(qpos)):
            raise ShapeError(
                f"a state's qpos must be {self.world.model.nq} finite values, got {qpos.shape}"
            )
        world = self.world
        world.forward(qpos)
        rgb, depth, seg = world.renderer.render(world.data, self.camera, show_robot=self.show_robot)
        k, pose, world_from_cam = self._camera()
        fx, fy, cx, cy = (float(k.fx), float(k.fy), float(k.cx), float(k.cy))
        p_world = self._points.world(world.data)
        normals = self._points.world_normals(world.data)
        px, z = project_points(p_world, world_from_cam, fx, fy, cx, cy)
        slope = slope_factor(p_world, normals, world_from_cam[:3, 3])
        dvis, rc = depth_test_visibility(
            px,
            z,
            depth,
            fy,
            slope,
            normals_cam=normals @ world_from_cam[:3, :3],
            map_normals=depth_map_normals(depth, fx, fy, cx, cy),
        )
        target = kc.SEGMENTATION_IDS[task.target_object]
        vis = dvis & (seg[rc[:, 0], rc[:, 1]] == target)
        order = grid_order(px, (self.grid, self.grid))
        return KitchenObservation(
            rgb=rgb,
            depth=depth,
            object_mask=seg == target,
            intrinsics=k,
            camera_pose=pose,
            points=p_world[order],
            tracks=px[order].astype(np.float32),
            depth_points=z[order].astype(np.float32),
            visible=vis[order],
            order=order,
            task_id=task.task_id,
            qpos=qpos.copy(),
        )

    def flow_along(
        self, observation: KitchenObservation, values: Float[np.ndarray, "T k"]
    ) -> ObjectFlow:
        """The object's points moved along joint values ``values [T, k]`` (the task's joints;
        ``values[0]`` should be the observed state's), in the observation's grid order: a
        world-frame flow ``[T, N]`` whose visibility is the observation's at every frame."""
        from jflow.sim.ground_truth import project_points

        if self.task is None or observation.task_id != self.task.task_id:
            raise ConfigError("the observation is not of the observer's current episode")
        values = np.asarray(values, np.float64)
        if values.ndim != 2 or values.shape[1] != len(self._idx) or len(values) < 2:
            raise ShapeError(
                f"object joint values must be [T >= 2, {len(self._idx)}], got {values.shape}"
            )
        k = observation.intrinsics
        fx, fy, cx, cy = (float(k.fx), float(k.fy), float(k.cx), float(k.cy))
        cam = observation.world_from_camera
        qpos = observation.qpos.copy()
        t, n = len(values), self.num_points
        pts = np.zeros((t, n, 3), np.float32)
        tracks = np.zeros((t, n, 2), np.float32)
        zs = np.zeros((t, n), np.float32)
        for i, v in enumerate(values):
            qpos[self._idx] = v
            self.world.forward(qpos)
            p = self._points.world(self.world.data)[observation.order]
            px, z = project_points(p, cam, fx, fy, cx, cy)
            pts[i], tracks[i], zs[i] = p, px, z
        self.world.forward(observation.qpos)
        visible = np.repeat(observation.visible[None], t, axis=0)
        return ObjectFlow(points=pts, visible=visible, tracks=tracks, depth=zs, frame="world")


__all__ = ["KitchenObservation", "KitchenObserver", "observer_rng"]
