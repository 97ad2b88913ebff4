"""`jflow eval-flow`: hand-checkable baselines, the 3D lifting of sampled grids, the direction
test, an end-to-end evaluation of a 2-step tiny run on real kitchen episodes, and bad input."""

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from jflow.cli import main
from jflow.data.kitchen_dataset import GenKitchenConfig, generate_kitchen_dataset
from jflow.data.shards import ShardedDataSource, read_manifest, write_records
from jflow.errors import ConfigError, DataError, OutputError
from jflow.evaluation.baselines import (
    MeanFlowBaseline,
    NearestNeighbourBaseline,
    camera_displacement,
    zero_motion,
)
from jflow.evaluation.clips import load_eval_clips
from jflow.evaluation.config import EvalFlowConfig
from jflow.evaluation.direction import direction_cosine, direction_mask, paired_task_ids
from jflow.evaluation.figure import per_task_ade, write_figure
from jflow.evaluation.flow_eval import (
    anchor,
    clips_conditioning,
    evaluate_flow,
    sampled_world_points,
)
from jflow.evaluation.report import format_markdown
from jflow.flow.normalization import FlowStats, normalize_grid_numpy
from jflow.metrics.flow3d import flow_errors
from jflow.models import TextEncoder

TASKS = ("open_microwave", "close_microwave")


def _kitchen(out: Path, episodes: int, seed: int) -> Path:
    generate_kitchen_dataset(
        GenKitchenConfig(
            out=out,
            tasks=TASKS,
            episodes_per_task=episodes,
            frames=8,
            resolution=64,
            grid=8,
            num_shards=1,
            seed=seed,
            progress=False,
        )  # fmt: skip
    )
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evalflow")
    return {"train": _kitchen(root / "train", 2, 0), "held": _kitchen(root / "held", 1, 1)}


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(max_length=8)


@pytest.fixture(scope="module")
def run(data, text_encoder, tmp_path_factory, train_tiny_run) -> Path:
    return train_tiny_run(
        data["train"], tmp_path_factory.mktemp("evalflow-run") / "run", text_encoder
    )


@pytest.fixture(scope="module")
def train_clips(data):
    return load_eval_clips(data["train"])[0]


def eval_config(run: Path, data: Path, out: Path, **overrides) -> EvalFlowConfig:
    base = EvalFlowConfig(
        run=run, data=data, out=out, samples_per_episode=2, steps=2, batch_size=1,
        fast_compile=True, progress=False,
    )  # fmt: skip
    return dataclasses.replace(base, **overrides)


def test_zero_motion_ade_is_the_mean_ground_truth_displacement(train_clips):
    for clip in train_clips:
        errors = flow_errors(zero_motion(clip), clip.points, clip.visible)
        moved = np.linalg.norm(clip.points - clip.points[:1], axis=-1)
        assert errors.ade == pytest.approx(moved[clip.visible].mean(), rel=1e-9)
        assert errors.fde == pytest.approx(moved[-1][clip.visible[-1]].mean(), rel=1e-9)
        assert errors.fde > 0.1  # The microwave door swings by decimetres.


def test_mean_flow_of_a_one_clip_task_gives_back_that_clip(train_clips):
    clip = train_clips[0]
    pred = MeanFlowBaseline([clip]).predict(clip)
    assert np.abs(pred - clip.points).max() < 1e-6
    # Two clips of a task: each point moves by the mean of their camera-frame displacements.
    a, b = [c for c in train_clips if c.task_id == clip.task_id][:2]
    both = MeanFlowBaseline([a, b])
    assert both.counts == {clip.task_id: 2}
    expected_cam = a.points_camera[0] + 0.5 * (camera_displacement(a) + camera_displacement(b))
    np.testing.assert_allclose(both.predict(a), a.to_world(expected_cam), atol=1e-6)
    # Under the jittered camera the per-clip camera frames differ, so the mean is not a's flow.
    assert flow_errors(both.predict(a), a.points, a.visible).ade > 1e-4
    with pytest.raises(DataError, match="task 'close_microwave' has no training clip"):
        MeanFlowBaseline([c for c in train_clips if c.task_id == "open_microwave"]).predict(
            next(c for c in train_clips if c.task_id == "close_microwave")
        )


def test_nearest_neighbour_retrieves_a_training_clip_itself(train_clips, text_encoder, data):
    nearest = NearestNeighbourBaseline(train_clips, text_encoder)
    for position, clip in enumerate(train_clips):
        match = nearest.retrieve(clip)
        assert match["position"] == position and match["index"] == clip.index
        assert match["text_cosine"] == pytest.approx(1.0, abs=1e-5)
        assert match["image_rmse"] == 0.0
        assert np.abs(nearest.predict(clip, match) - clip.points).max() < 1e-6
    # Held-out episodes retrieve a clip of their own task (open vs close is in the words).
    for clip in load_eval_clips(data["held"])[0]:
        assert nearest.retrieve(clip)["task_id"] == clip.task_id


def test_sampled_grids_lift_back_to_the_ground_truth_world_points(train_clips, data):
    stats = FlowStats.from_dict(read_manifest(data["train"])["normalization"])
    clip = train_clips[1]
    normalised = normalize_grid_numpy(clip.grid[None], stats)
    lifted = sampled_world_points(normalised, stats, clip)
    assert lifted.shape == (1, 8, 64, 3)
    assert np.abs(lifted[0] - clip.points).max() < 1e-4  # float32 grids, metres
    # Anchoring keeps a prediction's displacements and puts them on the known initial points.
    shifted = lifted + np.array([0.3, -0.2, 0.1])
    assert np.abs(anchor(shifted, clip.points[0])[0] - clip.points).max() < 1e-4


def test_clips_conditioning_holds_each_clips_first_frame_and_instruction(
    train_clips, text_encoder, data
):
    stats = FlowStats.from_dict(read_manifest(data["train"])["normalization"])
    clips = train_clips[:2]
    cond = clips_conditioning(clips, stats, text_encoder)
    tokens, mask = text_encoder.encode([c.instruction for c in clips])
    for i, clip in enumerate(clips):
        expected = normalize_grid_numpy(clip.grid[:1], stats)[0]
        np.testing.assert_allclose(np.asarray(cond.initial_points[i]), expected, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(cond.rgb[i]), clip.rgb)
        np.testing.assert_allclose(np.asarray(cond.depth[i]), clip.depth, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cond.text_tokens), tokens, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(cond.text_mask), mask)
    assert cond.initial_points.shape == (2, *clips[0].grid.shape[1:])
    with pytest.raises(DataError, match="at least one clip"):
        clips_conditioning([], stats, text_encoder)


def test_direction_cosine_and_paired_tasks(train_clips):
    clip = train_clips[0]
    mask = direction_mask(clip.visible)
    reverse = clip.points[::-1]
    assert direction_cosine(clip.points, clip.points, mask) == pytest.approx(1.0)
    assert direction_cosine(reverse, clip.points, mask) == pytest.approx(-1.0)
    assert direction_cosine(zero_motion(clip), clip.points, mask) == 0.0
    paired = paired_task_ids()
    assert {"open_microwave", "close_microwave", "turn_on_light", "turn_off_light"} <= paired
    assert {"turn_on_bottom_burner", "close_hinge_cabinet", "open_slide_cabinet"} <= paired
    assert "move_kettle_to_top_right_burner" not in paired


def test_eval_flow_end_to_end_writes_json_and_markdown(run, data, text_encoder, tmp_path):
    out = tmp_path / "report"
    report = evaluate_flow(eval_config(run, data["held"], out), text_encoder=text_encoder)
    saved = json.loads((out / "eval_flow.json").read_text())
    markdown = (out / "eval_flow.md").read_text()
    assert saved["num_episodes"] == report["num_episodes"] == 2
    assert saved["checkpoint_step"] == 2 and saved["train_data"] == str(data["train"])
    assert set(saved["methods"]) == {
        "model_raw",
        "model_anchored",
        "model_sample_mean",
        "zero_motion",
        "mean_flow",
        "nearest_neighbour",
    }  # fmt: skip
    for title in ("flow model (raw)", "zero motion", "mean training flow", "nearest training"):
        assert title in markdown
    methods = saved["methods"]
    held = load_eval_clips(data["held"])[0]
    zero = np.mean([flow_errors(zero_motion(c), c.points, c.visible).ade for c in held])
    assert methods["zero_motion"]["overall"]["ade"] == pytest.approx(zero, rel=1e-9)
    # The task's mean training flow beats standing still on held-out episodes of the same task.
    assert methods["mean_flow"]["overall"]["ade"] < 0.6 * zero
    assert set(methods["mean_flow"]["per_task"]) == set(TASKS)
    # Clamped frame 0: the anchored reading equals the raw one, so raw stays the headline.
    raw, anchored = methods["model_raw"]["overall"], methods["model_anchored"]["overall"]
    assert anchored["ade"] == pytest.approx(raw["ade"], abs=1e-5)
    assert saved["headline"] == "model_raw"
    assert methods["model_raw"]["best_of_samples"]["ade"] <= raw["ade"]
    # The point-wise mean of the samples is never further than the samples on average (convexity).
    assert methods["model_sample_mean"]["overall"]["ade"] <= anchored["ade"] + 1e-9
    # Direction: 2 paired episodes x 2 samples for the model, one prediction each for baselines.
    assert methods["model_raw"]["direction"]["total"] == 4
    assert methods["zero_motion"]["direction"]["fraction"] == 0.0
    assert methods["mean_flow"]["direction"]["fraction"] == 1.0
    assert methods["nearest_neighbour"]["direction"]["fraction"] == 1.0
    assert all(len(e["methods"]["model_raw"]["ade_samples"]) == 2 for e in saved["episodes"])
    assert saved["timing"]["sampling_calls"] == 2
    # Held-out data of another seed shares no episode with training; if it did, it would say so.
    assert saved["held_out_in_training"] == []
    leaked = {**saved, "held_out_in_training": [{"index": 0, "task_id": TASKS[0], "seed": 1}]}
    assert "**Warning**: 1 held-out episode(s)" in format_markdown(leaked)
    assert saved["settings"]["sample_shift"] == 1.0 and "shifted" not in format_markdown(saved)
    shifted = {**saved, "settings": {**saved["settings"], "sample_shift": 3.0}}
    assert "steps on a time grid shifted by 3," in format_markdown(shifted)
    # The picture: the per-task ADE table it draws, in cm, and a PNG that the markdown shows.
    rows, drawn, table = per_task_ade(saved)
    assert rows == ["overall", *saved["tasks"]] and "zero_motion" not in drawn
    assert drawn == ["model_raw", "model_sample_mean", "mean_flow", "nearest_neighbour"]
    task = saved["tasks"][0]
    assert table[0, 2] == pytest.approx(100 * methods["mean_flow"]["overall"]["ade"])
    assert table[1, 0] == pytest.approx(100 * methods["model_raw"]["per_task"][task]["ade"])
    image = cv2.imread(str(out / "eval_flow.png"))
    assert image is not None and image.shape[1] == 800 and image.shape[0] > 150
    assert "![Held-out ADE per task](eval_flow.png)" in markdown


def test_unseen_held_out_task_is_refused_then_skipped(run, data, text_encoder, tmp_path):
    source = ShardedDataSource(data["train"])
    keep = [i for i in range(len(source)) if source.metadata(i)["task_id"] == "open_microwave"]
    manifest = {
        k: v for k, v in source.manifest.items() if k not in ("shards", "index", "format_version")
    }
    only_open = tmp_path / "only_open"
    write_records(
        only_open,
        [(source[i], {"task_id": source.metadata(i)["task_id"]}) for i in keep],
        num_shards=1,
        manifest={**manifest, "tasks": manifest["tasks"][:1]},
    )
    cfg = eval_config(run, data["held"], tmp_path / "r", train_data=only_open)
    with pytest.raises(DataError, match="held-out tasks close_microwave have no clip"):
        evaluate_flow(cfg, text_encoder=text_encoder)
    report = evaluate_flow(
        dataclasses.replace(cfg, skip_unseen_tasks=True), text_encoder=text_encoder
    )
    assert report["num_episodes"] == 1 and report["tasks"] == ["open_microwave"]
    assert [s["task_id"] for s in report["skipped_episodes"]] == ["close_microwave"]
    assert report["train_data_is_the_runs"] is False
    assert "close_microwave" in (tmp_path / "r" / "eval_flow.md").read_text()


def test_run_without_checkpoint_and_bad_settings_are_clear_errors(run, data, tmp_path, capsys):
    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    shutil.copy(run / "config.json", empty / "config.json")
    with pytest.raises(DataError, match="has no checkpoint"):
        evaluate_flow(eval_config(empty, data["held"], tmp_path / "r"))
    with pytest.raises(DataError, match="does not exist"):
        evaluate_flow(eval_config(tmp_path / "missing", data["held"], tmp_path / "r"))
    with pytest.raises(ConfigError, match="samples_per_episode"):
        evaluate_flow(eval_config(run, data["held"], tmp_path / "r", samples_per_episode=0))
    with pytest.raises(ConfigError, match="sample_shift"):
        evaluate_flow(eval_config(run, data["held"], tmp_path / "r", sample_shift=-1.0))
    code = main(["eval-flow", "--run", str(empty), "--data", str(data["held"]), "--no-progress"])
    assert code == 2
    assert "has no checkpoint" in capsys.readouterr().err


def test_figure_of_a_minimal_report_and_an_unwritable_path(tmp_path):
    stats = {"overall": {"ade": 0.02}, "per_task": {"open_microwave": {"ade": 0.03}}}
    report = {"tasks": ["open_microwave"], "methods": {"mean_flow": stats}}
    rows, drawn, table = per_task_ade(report)
    assert rows == ["overall", "open_microwave"] and drawn == ["mean_flow"]
    np.testing.assert_allclose(table[:, 0], [2.0, 3.0])
    assert cv2.imread(str(write_figure(report, tmp_path / "f.png"))) is not None
    with pytest.raises(OutputError, match="cannot write the evaluation figure"):
        write_figure(report, tmp_path / "missing" / "f.png")
