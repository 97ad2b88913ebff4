"""Generating Franka Kitchen datasets: rendered episodes written as sharded FlowClip records.

``jflow gen-kitchen`` is a thin wrapper over :func:`generate_kitchen_dataset`. Each record is a
:class:`jflow.flow.FlowClip` (``FlowClip.to_arrays`` layout, video included) plus the episode's
``kind``, ``seed``, ``success``, ``object_qpos`` and, for robot episodes, ``gripper_mask``. The
flow's points are stored in grid order (``jflow.flow.grid``), so that the diffuser's grid layout
is a reshape. The manifest records counts, tasks, cameras, resolution, normalisation statistics
and the generation time (docs/data.md).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from jflow.data.shards import (
    MANIFEST_NAME,
    SHARD_DIR,
    ShardedWriter,
    check_output_dir,
    read_manifest,
    write_manifest,
)
from jflow.errors import ConfigError, UnknownNameError
from jflow.flow.grid import flow_to_grid, to_grid_order
from jflow.flow.normalization import FlowStats

DEFAULT_TASKS = (
    "open_microwave",
    "open_slide_cabinet",
    "open_hinge_cabinet",
    "move_kettle_to_top_left_burner",
    "turn_on_light",
    "turn_on_bottom_burner",
)


@dataclasses.dataclass(frozen=True)
class GenKitchenConfig:
    """Render Franka Kitchen episodes into a sharded dataset folder."""

    out: Path
    """The dataset folder to create (must be empty unless --overwrite)."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Task ids (see docs/sim.md)."""
    episodes_per_task: int = 10
    frames: int = 16
    """Frames per episode (>= 2)."""
    resolution: int = 128
    """Square image size in pixels (a multiple of 8)."""
    camera: str = "front"
    """The camera that films the episodes (front, side, side_right)."""
    kind: Literal["human", "robot"] = "human"
    """``human``: the object moves with the robot parked out of view; ``robot``: scripted robot."""
    grid: int = 16
    """Side of the query grid: each clip stores grid*grid flow points."""
    start_spread: float = 1.0
    """Multiplies each task's random start-state range (1: the task's own, small; 4: doors
    start up to about 0.2 rad ajar, the kettle up to 6 cm and 0.6 rad off its burner), so the
    first frame tells more about the motion that follows (docs/data.md)."""
    seed: int = 0
    num_shards: int = 4
    overwrite: bool = False
    """Allow writing into a non-empty folder (files of an earlier dataset are replaced)."""
    progress: bool = True

    def validate(self) -> GenKitchenConfig:
        """Check every value before any work starts; raises a ConfigError naming the problem."""
        from jflow.sim.tasks import get_task

        if not self.tasks:
            raise ConfigError("no tasks given: name at least one task with --tasks")
        for task_id in self.tasks:
            task = get_task(task_id)  # UnknownNameError listing the known tasks.
            if self.kind == "robot" and task.grasp_site is None:
                raise ConfigError(
                    f"task {task_id!r} has no scripted robot demonstration; use --kind human"
                )
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"a task is listed twice in --tasks {' '.join(self.tasks)}")
        if self.episodes_per_task < 1:
            raise ConfigError(f"episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if self.frames < 2:
            raise ConfigError(f"frames must be >= 2, got {self.frames}")
        if self.resolution < 8 or self.resolution % 8 != 0:
            raise ConfigError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.grid < 2:
            raise ConfigError(f"grid must be >= 2, got {self.grid}")
        from jflow.sim.kitchen_constants import CAMERA_NAMES

        if self.camera not in CAMERA_NAMES:
            raise UnknownNameError("camera", self.camera, CAMERA_NAMES)
        if self.num_shards < 1:
            raise ConfigError(f"num_shards must be >= 1, got {self.num_shards}")
        if not (np.isfinite(self.start_spread) and self.start_spread >= 0):
            raise ConfigError(f"start_spread must be a finite number >= 0, got {self.start_spread}")
        return self


def episode_seed(base_seed: int, task_id: str, episode: int) -> int:
    """A seed that depends only on (base seed, task, episode), not on the task list's order."""
    return (base_seed * 1_000_003 + zlib.crc32(task_id.encode()) * 1009 + episode) % (2**31 - 1)


def generate_kitchen_dataset(config: GenKitchenConfig) -> dict:
    """Render ``episodes_per_task`` episodes of every task and write them; returns the manifest."""
    from jflow.sim.episodes import KitchenWorld
    from jflow.sim.tasks import get_task

    config = config.validate()
    out = check_output_dir(config.out, overwrite=config.overwrite)
    if config.overwrite:  # Replace only jflow's own files of an earlier dataset.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for old in (out / SHARD_DIR).glob("*.array_record"):
            old.unlink()
    num_shards = min(config.num_shards, len(config.tasks) * config.episodes_per_task)
    grids = []
    counts: dict[str, int] = {}
    successes: dict[str, int] = {}
    start = time.perf_counter()
    jobs = [(t, e) for e in range(config.episodes_per_task) for t in config.tasks]
    bar = tqdm(jobs, desc="gen-kitchen", unit="episode", disable=not config.progress)
    intrinsics = None
    with (
        KitchenWorld(resolution=config.resolution) as world,
        ShardedWriter(out, num_shards) as writer,
    ):
        for task_id, episode in bar:
            bar.set_postfix_str(task_id)
            seed = episode_seed(config.seed, task_id, episode)
            ep = world.render_episode(
                task_id,
                seed,
                kind=config.kind,
                frames=config.frames,
                camera=config.camera,
                num_points=config.grid**2,
                start_spread=config.start_spread,
            )
            intrinsics = ep.clip.intrinsics
            clip = dataclasses.replace(
                ep.clip, flow=to_grid_order(ep.clip.flow.numpy(), (config.grid,) * 2)
            )
            clip.validate()
            arrays = clip.to_arrays()
            arrays.update(
                kind=np.asarray(ep.kind),
                seed=np.asarray(seed, np.int64),
                success=np.asarray(bool(ep.success)),
                object_qpos=np.asarray(ep.object_qpos, np.float32),
            )
            if config.kind == "robot":
                arrays["gripper_mask"] = np.asarray(ep.gripper_mask, bool)
            writer.write(arrays, {"task_id": task_id, "episode": episode, "seed": seed})
            grids.append(np.asarray(flow_to_grid(clip.flow, (config.grid,) * 2)))
            counts[task_id] = counts.get(task_id, 0) + 1
            successes[task_id] = successes.get(task_id, 0) + int(ep.success)
        shards = writer.close()
    seconds = time.perf_counter() - start
    stats = FlowStats.from_grids(grids)
    k = intrinsics
    manifest = {
        "kind": "jflow.kitchen",
        "num_records": sum(counts.values()),
        "counts": counts,
        "successes": successes,
        "tasks": [
            {
                "task_id": t,
                "instructions": list(get_task(t).instructions),
                "target": get_task(t).target_object,
            }
            for t in config.tasks
        ],
        "episode_kind": config.kind,
        "cameras": [
            {
                "name": config.camera,
                "width": k.width,
                "height": k.height,
                "intrinsics": [float(k.fx), float(k.fy), float(k.cx), float(k.cy)],
            }
        ],
        "resolution": config.resolution,
        "frames": config.frames,
        "grid": [config.grid, config.grid],
        "num_points": config.grid**2,
        "flow_frame": "world",
        "normalization": stats.to_dict(),
        "generation": {
            "seconds": round(seconds, 2),
            "seconds_per_episode": round(seconds / max(len(jobs), 1), 3),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "seed": config.seed,
            "start_spread": config.start_spread,
        },
        "shards": shards,
        "index": writer.index,
    }
    write_manifest(out, manifest)
    return read_manifest(out)


def summarize(manifest: dict) -> str:
    """A short human-readable summary of a dataset manifest."""
    lines = [
        f"{manifest['num_records']} clips, {manifest['frames']} frames at "
        f"{manifest['resolution']}x{manifest['resolution']}, {manifest['num_points']} points "
        f"({manifest['grid'][0]}x{manifest['grid'][1]} grid), {manifest['episode_kind']} episodes",
        f"shards: {len(manifest['shards'])}, "
        f"{sum(s['bytes'] for s in manifest['shards']) / 2**20:.1f} MiB",
    ]
    for task in manifest["tasks"]:
        t = task["task_id"]
        lines.append(
            f"  {t:<34} {manifest['counts'].get(t, 0):>4} clips, "
            f"{manifest['successes'].get(t, 0)} reach the goal   e.g. {task['instructions'][0]!r}"
        )
    gen = manifest["generation"]
    lines.append(
        f"generated in {gen['seconds']:.1f} s ({gen['seconds_per_episode']:.2f} s/episode) on {gen['machine']}"
        f"; seed {gen.get('seed', '?')}, start spread {gen.get('start_spread', 1.0)}"
    )
    norm = manifest["normalization"]
    lines.append(
        "normalisation (x, y, depth): mean "
        + ", ".join(f"{v:.3f}" for v in norm["mean"])
        + "; std "
        + ", ".join(f"{v:.3f}" for v in norm["std"])
    )
    return "\n".join(lines)


def dataset_summary(dataset_dir: str | os.PathLike) -> str:
    return summarize(read_manifest(dataset_dir))
