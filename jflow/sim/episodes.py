"""Kitchen episodes: rendered demonstrations with ground-truth 3D object flow.

Public API (what the dataset writer calls)::

    from jflow.sim.episodes import KitchenWorld, render_episode

    world = KitchenWorld(resolution=128)          # compiles/loads the model + one renderer
    for task_id in TASK_IDS:                      # jflow.sim.tasks.TASK_IDS
        for seed in range(10):
            ep = world.render_episode(task_id, seed, kind="human", frames=16, camera="front")
            ep.clip.to_arrays()                    # the FlowClip, ready to store
    world.close()

``render_episode(...)`` (module level) does the same with a cached world per resolution.
Episodes are deterministic given ``(task_id, seed, kind, frames, resolution, camera,
num_points, randomize)``.
"""

from __future__ import annotations

import atexit
import dataclasses
import zlib

import mujoco
import numpy as np

from jflow.errors import ConfigError, UnknownNameError
from jflow.flow.records import FlowClip, ObjectFlow
from jflow.sim import kitchen_constants as kc
from jflow.sim.cameras import (
    camera_intrinsics,
    camera_pose,
    camera_pose_matrix,
    check_resolution,
    jitter_camera,
)
from jflow.sim.demos import (
    object_trajectory,
    randomized_scene_qpos,
    robot_trajectory,
    sample_endpoints,
)
from jflow.sim.ground_truth import (
    depth_map_normals,
    depth_test_visibility,
    project_points,
    sample_surface_points,
    slope_factor,
)
from jflow.sim.model import KitchenModelConfig, home_qpos, load_kitchen
from jflow.sim.rendering import KitchenRenderer
from jflow.sim.tasks import TASK_IDS, get_task

KINDS = ("human", "robot")


@dataclasses.dataclass(frozen=True)
class KitchenEpisode:
    """One rendered demonstration.

    Attributes:
      clip: the :class:`~jflow.flow.records.FlowClip`: frame-0 ``rgb``/``depth``/``object_mask``,
        ``intrinsics``, ``camera_pose`` (world_from_camera, OpenCV, *after* jitter), one
        ``instruction`` phrasing chosen by the seed, ``task_id``, ``flow`` (``frame="world"``:
        points ``[T,N,3]``, visible ``[T,N]``, tracks ``[T,N,2]`` (x, y) pixels, depth ``[T,N]``),
        ``video [T,H,W,3]`` uint8, ``depth_video [T,H,W]`` float32, ``camera_name``.
      segmentation: ``[T,H,W]`` int32 object ids (``kitchen_constants.SEGMENTATION_OBJECTS``).
      gripper_mask: ``[T,H,W]`` bool, pixels of the gripper (all False in human-style demos).
      object_qpos: ``[T,k]`` the target object's joint values (the task's ``joints``).
      robot_qpos: ``[T,9]`` the robot's joints (hidden in human-style demos).
      success: the task's success test on the final state.
      depth_visible: ``[T,N]`` bool, the depth test alone (``flow.visible`` also requires the
        point's pixel to be segmented as the target object).
    """

    clip: FlowClip
    segmentation: np.ndarray
    gripper_mask: np.ndarray
    object_qpos: np.ndarray
    robot_qpos: np.ndarray
    success: bool
    kind: str
    seed: int
    depth_visible: np.ndarray

    @property
    def task_id(self) -> str:
        return self.clip.task_id


def episode_rng(task_id: str, seed: int, kind: str) -> np.random.Generator:
    """The episode's random generator: a pure function of (task, seed, kind)."""
    return np.random.default_rng(
        [int(seed) & 0xFFFFFFFF, zlib.crc32(task_id.encode()), KINDS.index(kind)]
    )


class KitchenWorld:
    """The kitchen model and one renderer at a fixed resolution, reused across episodes."""

    def __init__(self, resolution: int = 128, *, config: KitchenModelConfig | None = None):
        width, height = check_resolution(resolution)
        self.resolution = width
        self._shared = load_kitchen(config)
        self.renderer = KitchenRenderer(self._shared, width, height)
        self.kitchen = self.renderer.kitchen  # private copy (mutated by randomisation)
        self.model = self.renderer.model
        self.data = mujoco.MjData(self.model)
        self._home = home_qpos(self.kitchen)

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> KitchenWorld:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def forward(self, qpos: np.ndarray) -> None:
        """Set ``qpos`` and compute kinematics and camera poses (no dynamics)."""
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def render_episode(
        self,
        task_id: str,
        seed: int,
        *,
        kind: str = "human",
        frames: int = 16,
        camera: str = "front",
        num_points: int = 256,
        randomize: bool = True,
        start_spread: float = 1.0,
    ) -> KitchenEpisode:
        """Render one demonstration of ``task_id`` (see :class:`KitchenEpisode`).

        ``kind="human"``: the object moves by itself, robot hidden. ``kind="robot"``: a scripted
        robot holds the handle (only tasks with ``supports_robot_demo``). ``randomize=False``
        gives nominal object states, camera, light (textures are still drawn from the seed).
        ``start_spread`` widens the random start state of the object (1: the task's own start
        noise; see :func:`jflow.sim.demos.sample_endpoints`); the same seed draws the same
        episode otherwise.
        """
        task = get_task(task_id)
        if kind not in KINDS:
            raise UnknownNameError("demo kind", kind, KINDS)
        if kind == "robot" and not task.supports_robot_demo:
            robot_tasks = [t for t in TASK_IDS if get_task(t).supports_robot_demo]
            raise ConfigError(
                f"task {task_id!r} has no scripted robot demo; tasks with one: {', '.join(robot_tasks)}"
            )
        if not isinstance(frames, (int, np.integer)) or frames < 2:
            raise ConfigError(f"frames must be an integer >= 2, got {frames!r}")
        if camera not in kc.CAMERAS:
            raise UnknownNameError("camera", camera, kc.CAMERA_NAMES)
        if not isinstance(num_points, (int, np.integer)) or num_points <= 0:
            raise ConfigError(f"num_points must be a positive integer, got {num_points!r}")

        rng = episode_rng(task_id, seed, kind)
        model, data = self.model, self.data
        self.renderer.randomize_textures(rng)
        self.renderer.randomize_lighting(rng, enabled=randomize)
        jitter_camera(
            model,
            camera,
            rng,
            *(
                (kc.CAMERA_POSITION_JITTER, kc.CAMERA_ROTATION_JITTER_DEG)
                if randomize
                else (0.0, 0.0)
            ),
        )

        start, goal = sample_endpoints(self.kitchen, task, rng, randomize, start_spread)
        values = object_trajectory(task, start, goal, frames, rng if randomize else None)
        idx = self.kitchen.qpos_indices(task.joints)
        base = randomized_scene_qpos(self.kitchen, task, self._home, rng, randomize)
        qpos = np.repeat(base[None], frames, axis=0)
        qpos[:, idx] = values
        if kind == "robot":
            qpos[:, : kc.ROBOT_NQ] = robot_trajectory(self.kitchen, model, data, task, qpos)
        points = sample_surface_points(self.kitchen, task.target_object, int(num_points), rng)

        k = camera_intrinsics(model, camera, self.resolution)
        fx, fy, cx, cy = (float(k.fx), float(k.fy), float(k.cx), float(k.cy))
        target_id = kc.SEGMENTATION_IDS[task.target_object]
        gripper_id = kc.SEGMENTATION_IDS["gripper"]
        h = w = self.resolution
        video = np.zeros((frames, h, w, 3), np.uint8)
        depth_video = np.zeros((frames, h, w), np.float32)
        seg_video = np.zeros((frames, h, w), np.int32)
        pts = np.zeros((frames, num_points, 3), np.float32)
        tracks = np.zeros((frames, num_points, 2), np.float32)
        zs = np.zeros((frames, num_points), np.float32)
        vis = np.zeros((frames, num_points), bool)
        depth_vis = np.zeros((frames, num_points), bool)
        self.forward(qpos[0])
        cam_id = model.camera(camera).id
        world_from_cam = camera_pose_matrix(data, cam_id)
        pose = camera_pose(model, data, camera)
        for t in range(frames):
            self.forward(qpos[t])
            rgb, depth, seg = self.renderer.render(data, camera, show_robot=(kind == "robot"))
            video[t], depth_video[t], seg_video[t] = rgb, depth, seg
            p_world = points.world(data)
            px, z = project_points(p_world, world_from_cam, fx, fy, cx, cy)
            slope = slope_factor(p_world, points.world_normals(data), world_from_cam[:3, 3])
            normals_cam = points.world_normals(data) @ world_from_cam[:3, :3]
            dvis, rc = depth_test_visibility(
                px,
                z,
                depth,
                fy,
                slope,
                normals_cam=normals_cam,
                map_normals=depth_map_normals(depth, fx, fy, cx, cy),
            )
            depth_vis[t] = dvis
            vis[t] = dvis & (seg[rc[:, 0], rc[:, 1]] == target_id)
            pts[t], tracks[t], zs[t] = p_world, px, z

        final = data.qpos[idx].copy()
        flow = ObjectFlow(points=pts, visible=vis, tracks=tracks, depth=zs, frame="world")
        clip = FlowClip(
            rgb=video[0],
            depth=depth_video[0],
            intrinsics=k,
            camera_pose=pose,
            object_mask=seg_video[0] == target_id,
            instruction=task.instruction(seed),
            task_id=task_id,
            flow=flow,
            video=video,
            depth_video=depth_video,
            camera_name=camera,
        )
        return KitchenEpisode(
            clip=clip,
            segmentation=seg_video,
            gripper_mask=seg_video == gripper_id
            if kind == "robot"
            else np.zeros_like(seg_video, bool),
            object_qpos=qpos[:, idx].astype(np.float64),
            robot_qpos=qpos[:, : kc.ROBOT_NQ].astype(np.float64),
            success=task.is_success(final),
            kind=kind,
            seed=int(seed),
            depth_visible=depth_vis,
        )


_WORLDS: dict[int, KitchenWorld] = {}


def get_world(resolution: int = 128) -> KitchenWorld:
    """A module-cached :class:`KitchenWorld` per resolution (one renderer each)."""
    width, _ = check_resolution(resolution)
    if width not in _WORLDS:
        world = KitchenWorld(width)
        _WORLDS[width] = world
        # Registered after the world exists, so after MuJoCo registered eglTerminate when it
        # opened the EGL display: exit handlers run last-in first-out, so this one frees the
        # GL context while the display is still up.
        atexit.register(world.close)
    return _WORLDS[width]


def render_episode(
    task_id: str,
    seed: int,
    *,
    kind: str = "human",
    frames: int = 16,
    resolution: int = 128,
    camera: str = "front",
    num_points: int = 256,
    randomize: bool = True,
) -> KitchenEpisode:
    """Render one episode with the cached world for ``resolution`` (see :class:`KitchenWorld`)."""
    get_task(task_id)
    return get_world(resolution).render_episode(
        task_id,
        seed,
        kind=kind,
        frames=frames,
        camera=camera,
        num_points=num_points,
        randomize=randomize,
    )
