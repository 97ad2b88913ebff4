"""The grain input pipeline: dataset records to batches of normalised grid-layout flows.

Batch layout (docs/data.md), ``B`` = batch size, ``T`` frames, ``g_h x g_w`` the query grid,
``H x W`` the image:

======================  ===========================  =========================================
key                     shape, dtype                 meaning
======================  ===========================  =========================================
``flow``                [B, T, g_h, g_w, 4] float32  normalised grid flow (x, y, depth, visible)
``rgb``                 [B, H, W, 3] uint8           first frame
``depth``               [B, H, W] float32            first depth frame, meters
``object_mask``         [B, H, W] bool               target object on the first frame
``points``              [B, T, g_h*g_w, 3] float32   ground-truth points in the record's frame
``visible``             [B, T, g_h*g_w] bool         visibility of those points
``intrinsics``          [B, 4] float32               fx, fy, cx, cy (pixels)
``camera_pose``         [B, 7] float32               world_from_camera as wxyz_xyz
``instruction``         [B] str                      the language instruction
``task_id``             [B] str                      the task identifier
======================  ===========================  =========================================
"""

from __future__ import annotations

import dataclasses
import os

import grain
import numpy as np

from jflow.data.shards import ShardedDataSource
from jflow.errors import ConfigError, DataError
from jflow.flow.normalization import FlowStats, normalize_grid_numpy

BATCH_KEYS = (
    "flow",
    "rgb",
    "depth",
    "object_mask",
    "points",
    "visible",
    "intrinsics",
    "camera_pose",
    "instruction",
    "task_id",
)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How to read a dataset folder into batches."""

    batch_size: int = 8
    """Global batch size is ``batch_size``; each of ``shard_count`` readers gets an equal part."""
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None
    """``None`` repeats forever."""
    drop_remainder: bool = True
    shard_index: int = 0
    """This reader's shard (``jax.process_index()`` on several hosts)."""
    shard_count: int = 1
    """The number of readers (``jax.process_count()`` on several hosts)."""
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.shard_count < 1 or not 0 <= self.shard_index < self.shard_count:
            raise ConfigError(
                f"shard_index must be in [0, shard_count), got {self.shard_index} of {self.shard_count}"
            )
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ConfigError(f"num_epochs must be >= 1 or None, got {self.num_epochs}")


class RecordToExample(grain.transforms.Map):
    """Turns a stored record into one training example (the batch keys, without ``B``)."""

    def __init__(self, grid_hw: tuple[int, int], stats: FlowStats | None):
        self.grid_hw = tuple(grid_hw)
        self.stats = stats

    def map(self, element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tracks = element["flow_tracks"]
        t, n = tracks.shape[:2]
        gh, gw = self.grid_hw
        if n != gh * gw:
            raise DataError(f"a record has {n} flow points but the dataset grid is {gh}x{gw}")
        grid = np.concatenate(
            [tracks, element["flow_depth"][..., None], element["flow_visible"][..., None]], axis=-1
        ).astype(np.float32)
        grid = grid.reshape(t, gh, gw, 4)
        if self.stats is not None:
            grid = normalize_grid_numpy(grid, self.stats)
        return {
            "flow": grid.astype(np.float32),
            "rgb": element["rgb"],
            "depth": element["depth"].astype(np.float32),
            "object_mask": element["object_mask"].astype(bool),
            "points": element["flow_points"].astype(np.float32),
            "visible": element["flow_visible"].astype(bool),
            "intrinsics": element["intrinsics"].astype(np.float32),
            "camera_pose": element["camera_pose"].astype(np.float32),
            "instruction": element["instruction"],
            "task_id": element["task_id"],
        }


def dataset_stats(source: ShardedDataSource) -> FlowStats:
    stats = source.manifest.get("normalization")
    if stats is None:
        raise DataError(f"{source.dataset_dir}/manifest.json has no normalization statistics")
    return FlowStats.from_dict(stats)


def make_dataset(
    dataset_dir: str | os.PathLike, config: PipelineConfig = PipelineConfig()
) -> grain.IterDataset:
    """A grain ``IterDataset`` of batches (see the module docstring for the layout).

    Its iterator supports ``get_state()`` / ``set_state()`` for exact resumption.
    """
    source = ShardedDataSource(dataset_dir)
    grid_hw = tuple(source.manifest.get("grid", (16, 16)))
    stats = dataset_stats(source) if config.normalize else None
    per_reader = config.batch_size // config.shard_count
    if per_reader * config.shard_count != config.batch_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is not divisible by shard_count {config.shard_count}"
        )
    ds = grain.MapDataset.source(source)
    if config.shard_count > 1:
        ds = ds[config.shard_index :: config.shard_count]
    if len(ds) == 0:
        raise DataError(f"dataset {dataset_dir} has no records for reader {config.shard_index}")
    if len(ds) < per_reader and config.drop_remainder and config.num_epochs is not None:
        raise ConfigError(
            f"batch of {per_reader} is larger than the {len(ds)} records available with "
            "drop_remainder=True"
        )
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    ds = ds.repeat(config.num_epochs)
    ds = ds.map(RecordToExample(grid_hw, stats))
    ds = ds.batch(per_reader, drop_remainder=config.drop_remainder)
    return ds.to_iter_dataset()
