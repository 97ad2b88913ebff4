"""Sharded ArrayRecord datasets and the grain pipeline, on synthetic FlowClips."""

import os

import numpy as np
import pytest

from jflow.data.pipeline import BATCH_KEYS, PipelineConfig, make_dataset
from jflow.data.shards import ShardedDataSource, check_output_dir, write_records
from jflow.errors import ConfigError, DataError, OutputError
from jflow.flow import FlowStats, flow_to_grid

from .test_flow_records import make_flow


def synthetic_records(n: int, t: int = 5):
    import jaxlie

    from jflow.flow import FlowClip

    rng = np.random.default_rng(0)
    for i in range(n):
        flow, k = make_flow(t=t, seed=i)
        clip = FlowClip(
            rgb=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
            depth=rng.random((48, 64)).astype(np.float32) + 0.5,
            intrinsics=k,
            camera_pose=jaxlie.SE3.identity(),
            object_mask=rng.random((48, 64)) > 0.5,
            instruction=f"instruction {i}",
            task_id=f"task_{i % 2}",
            flow=flow,
        )
        yield clip.to_arrays(), {"task_id": clip.task_id, "seed": i}


def write_dataset(out, n=6, shards=2):
    grids = [np.asarray(flow_to_grid(make_flow(seed=i)[0], (4, 4))) for i in range(n)]
    stats = FlowStats.from_grids(grids)
    return write_records(
        out,
        synthetic_records(n),
        num_shards=shards,
        manifest={
            "grid": [4, 4],
            "frames": 5,
            "normalization": stats.to_dict(),
            "tasks": [
                {
                    "task_id": f"task_{k}",
                    "instructions": [f"instruction {i}" for i in range(k, n, 2)],
                }
                for k in range(2)
            ],
        },
    )


def test_write_then_read_back_every_record(tmp_path):
    manifest = write_dataset(tmp_path / "ds")
    assert [s["num_records"] for s in manifest["shards"]] == [3, 3]
    source = ShardedDataSource(tmp_path / "ds")
    assert len(source) == 6
    for i in range(6):
        record = source[i]
        assert str(record["instruction"]) == f"instruction {i}"
        assert source.metadata(i)["seed"] == i
        np.testing.assert_allclose(record["flow_points"], make_flow(seed=i)[0].points)


def test_pipeline_batches_have_documented_shapes(tmp_path):
    write_dataset(tmp_path / "ds")
    ds = make_dataset(tmp_path / "ds", PipelineConfig(batch_size=4, seed=1))
    batch = next(iter(ds))
    assert set(batch) == set(BATCH_KEYS)
    assert batch["flow"].shape == (4, 5, 4, 4, 4) and batch["flow"].dtype == np.float32
    assert batch["rgb"].shape == (4, 48, 64, 3) and batch["rgb"].dtype == np.uint8
    assert batch["depth"].shape == (4, 48, 64)
    assert batch["object_mask"].shape == (4, 48, 64) and batch["object_mask"].dtype == bool
    assert batch["points"].shape == (4, 5, 16, 3)
    assert batch["visible"].shape == (4, 5, 16)
    assert batch["intrinsics"].shape == (4, 4) and batch["camera_pose"].shape == (4, 7)
    assert batch["instruction"].shape == (4,)
    # Normalised visibility is +-1 and agrees with the raw visibility.
    np.testing.assert_array_equal(batch["flow"][..., 3].reshape(4, 5, 16) > 0, batch["visible"])


def test_pipeline_iterator_state_resumes_exactly(tmp_path):
    write_dataset(tmp_path / "ds")
    ds = make_dataset(tmp_path / "ds", PipelineConfig(batch_size=2, seed=3))
    it = iter(ds)
    next(it)
    state = it.get_state()
    expected = [next(it)["instruction"].tolist() for _ in range(4)]
    it2 = iter(ds)
    it2.set_state(state)
    assert [next(it2)["instruction"].tolist() for _ in range(4)] == expected


def test_reader_sharding_splits_records(tmp_path):
    write_dataset(tmp_path / "ds")
    seen = []
    for shard in range(2):
        cfg = PipelineConfig(
            batch_size=2, shard_index=shard, shard_count=2, shuffle=False, num_epochs=1
        )
        for batch in make_dataset(tmp_path / "ds", cfg):
            seen.extend(batch["instruction"].tolist())
    assert sorted(seen) == sorted(f"instruction {i}" for i in range(6))


def test_truncated_shard_is_named(tmp_path):
    manifest = write_dataset(tmp_path / "ds")
    shard = tmp_path / "ds" / manifest["shards"][1]["path"]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"shard {shard} is truncated"):
        ShardedDataSource(tmp_path / "ds")
    with pytest.raises(DataError, match="truncated"):
        next(iter(make_dataset(tmp_path / "ds")))


def test_corrupt_shard_of_the_right_size_is_named(tmp_path):
    manifest = write_dataset(tmp_path / "ds")
    shard = tmp_path / "ds" / manifest["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    for i in range(100, len(data) - 100, 97):
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    source = ShardedDataSource(tmp_path / "ds")
    with pytest.raises(DataError, match=str(shard)):
        for i in range(len(source)):
            source[i]


def test_missing_manifest_and_shard(tmp_path):
    with pytest.raises(DataError, match="manifest.json not found"):
        ShardedDataSource(tmp_path)
    manifest = write_dataset(tmp_path / "ds")
    os.remove(tmp_path / "ds" / manifest["shards"][0]["path"])
    with pytest.raises(DataError, match="is missing"):
        ShardedDataSource(tmp_path / "ds")


def test_output_folder_checks(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deep").is_dir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty .*precious.txt"):
        check_output_dir(tmp_path / "full")
    assert (tmp_path / "full" / "precious.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "afile")
    with pytest.raises(OutputError, match="cannot create output folder"):
        check_output_dir(tmp_path / "afile" / "sub")
    with pytest.raises(OutputError, match="not writable|cannot create"):
        check_output_dir("/proc/jflow-test-output")


def test_pipeline_config_errors():
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        PipelineConfig(batch_size=0)
    with pytest.raises(ConfigError, match="shard_index"):
        PipelineConfig(shard_index=2, shard_count=2)
