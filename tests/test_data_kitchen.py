"""`jflow gen-kitchen`: a small real kitchen dataset, read back through grain; bad input."""

import time
from pathlib import Path

import numpy as np
import pytest

from jflow.cli import main
from jflow.data.kitchen_dataset import GenKitchenConfig, generate_kitchen_dataset, summarize
from jflow.data.pipeline import PipelineConfig, make_dataset
from jflow.data.shards import ShardedDataSource
from jflow.errors import ConfigError, DataError, OutputError, UnknownNameError
from jflow.flow import FlowClip

TASKS = ("open_microwave", "close_slide_cabinet")


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("kitchen") / "ds"
    config = GenKitchenConfig(
        out=out, tasks=TASKS, episodes_per_task=2, frames=8, resolution=64, num_shards=2,
        progress=False,
    )  # fmt: skip
    return out, generate_kitchen_dataset(config)


def test_manifest_describes_the_dataset(kitchen):
    out, manifest = kitchen
    assert manifest["num_records"] == 4
    assert manifest["counts"] == {t: 2 for t in TASKS}
    assert manifest["successes"] == {t: 2 for t in TASKS}  # Demonstrations reach the goal.
    assert manifest["frames"] == 8 and manifest["resolution"] == 64 and manifest["grid"] == [16, 16]
    assert [c["name"] for c in manifest["cameras"]] == ["front"]
    fx, fy, cx, cy = manifest["cameras"][0]["intrinsics"]
    assert cx == cy == 32.0 and fx == fy > 0
    assert len(manifest["normalization"]["mean"]) == 3
    assert all(s > 0 for s in manifest["normalization"]["std"])
    assert sum(s["num_records"] for s in manifest["shards"]) == 4
    assert (manifest["generation"]["seed"], manifest["generation"]["start_spread"]) == (0, 1.0)
    assert "seed 0, start spread 1.0" in summarize(manifest)


def test_records_are_flow_clips_in_grid_order(kitchen):
    out, _ = kitchen
    source = ShardedDataSource(out)
    for i in range(len(source)):
        record = source[i]
        clip = FlowClip.from_arrays(record).validate()
        assert clip.task_id in TASKS
        assert clip.video.shape == (8, 64, 64, 3) and clip.depth_video.shape == (8, 64, 64)
        assert clip.flow.frame == "world" and clip.flow.points.shape == (8, 256, 3)
        # Grid order: rows of 16 points sorted by x, rows ordered by y on the first frame.
        tracks0 = np.asarray(clip.flow.tracks[0]).reshape(16, 16, 2)
        assert np.all(np.diff(tracks0[..., 0], axis=1) >= 0)
        assert np.all(tracks0[:-1, :, 1].max(axis=1) <= tracks0[1:, :, 1].min(axis=1) + 1e-5)
        # The object moves: the demonstration is not static.
        moved = np.linalg.norm(np.asarray(clip.flow.points[-1] - clip.flow.points[0]), axis=-1)
        assert np.median(moved) > 0.05
        assert bool(record["success"])


def test_grain_batches_have_the_documented_shapes(kitchen):
    out, _ = kitchen
    batch = next(iter(make_dataset(out, PipelineConfig(batch_size=2, seed=0))))
    assert batch["flow"].shape == (2, 8, 16, 16, 4) and batch["flow"].dtype == np.float32
    assert np.isfinite(batch["flow"]).all()
    assert batch["rgb"].shape == (2, 64, 64, 3) and batch["rgb"].dtype == np.uint8
    assert batch["depth"].shape == (2, 64, 64) and batch["object_mask"].shape == (2, 64, 64)
    assert batch["points"].shape == (2, 8, 256, 3) and batch["visible"].shape == (2, 8, 256)
    assert set(batch["task_id"].tolist()) <= set(TASKS)
    # Visible cells normalised with the dataset statistics are of order one.
    vis = batch["flow"][..., 3] > 0
    assert np.abs(batch["flow"][..., :3][vis]).mean() < 3


def test_truncated_shard_error_names_the_file(kitchen, tmp_path):
    import shutil

    out, manifest = kitchen
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / manifest["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(DataError, match=str(shard)):
        make_dataset(copy, PipelineConfig(batch_size=2))


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            {"tasks": ("open_the_fridge",)},
            UnknownNameError,
            "unknown task 'open_the_fridge'; known tasks: open_microwave",
        ),
        ({"episodes_per_task": 0}, ConfigError, "episodes_per_task must be >= 1, got 0"),
        ({"resolution": 100}, ConfigError, "resolution must be a positive multiple of 8, got 100"),
        ({"frames": 1}, ConfigError, "frames must be >= 2"),
        ({"tasks": ()}, ConfigError, "no tasks given"),
        ({"camera": "top"}, UnknownNameError, "unknown camera 'top'"),
        ({"start_spread": -1.0}, ConfigError, "start_spread must be a finite number >= 0"),
        ({"start_spread": float("nan")}, ConfigError, "start_spread must be a finite number"),
        (
            {"kind": "robot", "tasks": ("turn_on_light",)},
            ConfigError,
            "no scripted robot demonstration",
        ),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, overrides, error, message):
    config = GenKitchenConfig(out=tmp_path / "ds", **overrides)
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        generate_kitchen_dataset(config)
    assert time.perf_counter() - start < 5.0
    assert not (tmp_path / "ds").exists()


def test_unwritable_or_occupied_output_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("user data")
    with pytest.raises(OutputError, match="cannot create output folder"):
        generate_kitchen_dataset(
            GenKitchenConfig(out=blocker / "ds", tasks=TASKS[:1], episodes_per_task=1)
        )
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep")
    code = main(
        [
            "gen-kitchen",
            "--out",
            str(occupied),
            "--tasks",
            "open_microwave",
            "--episodes-per-task",
            "1",
        ]
    )
    assert code == 2
    assert "not empty" in capsys.readouterr().err
    assert (occupied / "notes.txt").read_text() == "keep"
    assert blocker.read_text() == "user data"
