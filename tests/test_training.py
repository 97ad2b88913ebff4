"""Training the flow diffuser: data parallel equals single device, SIGKILL-and-resume is exact,
bad batches and foreign checkpoints give clear errors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jflow.errors import CheckpointError, ConfigError, DataError, ShapeError, TrainingError
from jflow.models import TextEncoder
from jflow.training.config import TrainConfig
from jflow.training.tensorboard import read_metrics
from jflow.training.trainer import train

from .test_data_shards import write_dataset

STEPS = 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("train") / "ds"
    write_dataset(path, n=8, shards=2)
    return path


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(max_length=8)


def config(dataset: Path, out: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        data=dataset,
        out=out,
        model="tiny",
        steps=STEPS,
        batch_size=8,
        warmup_steps=3,
        log_every=1,
        checkpoint_every=4,
        devices=1,
        progress=False,
        fast_compile=True,
    )
    return dataclasses.replace(base, **overrides)


def losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(run_dir / "logs")}


@pytest.fixture(scope="module")
def single_device_run(dataset, text_encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "one"
    train(config(dataset, out), text_encoder=text_encoder)
    return out


def test_eight_devices_give_the_single_device_losses(
    dataset, text_encoder, single_device_run, tmp_path
):
    import jax

    assert jax.device_count() == 8, "tests/conftest.py emulates 8 CPU devices"
    out = tmp_path / "eight"
    train(config(dataset, out, devices=8), text_encoder=text_encoder)
    one, eight = losses(single_device_run), losses(out)
    assert sorted(one) == sorted(eight) == list(range(1, STEPS + 1))
    a = np.array([one[s] for s in sorted(one)])
    b = np.array([eight[s] for s in sorted(eight)])
    assert np.max(np.abs(a - b) / np.abs(a)) <= 1e-4
    assert a[-4:].mean() < a[:4].mean()  # It learns.
    # TensorBoard event files are written beside metrics.jsonl.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "logs"))
    acc.Reload()
    tb = [e.value for e in acc.Scalars("loss")]
    np.testing.assert_allclose(tb, b, rtol=1e-6)


def test_sigkill_then_resume_continues_the_same_loss_sequence(dataset, single_device_run, tmp_path):
    out = tmp_path / "killed"
    cfg = config(dataset, out)
    cmd = [
        sys.executable, "-m", "jflow.cli", "train",
        "--data", str(dataset), "--out", str(out), "--model", "tiny",
        "--steps", str(STEPS), "--batch-size", "8", "--warmup-steps", "3",
        "--log-every", "1", "--checkpoint-every", str(cfg.checkpoint_every),
        "--devices", "1", "--no-progress", "--fast-compile",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first_ckpt = out / "checkpoints" / "4"
    deadline = time.time() + 300
    while not first_ckpt.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = losses(out)
    assert proc.returncode == -signal.SIGKILL
    assert first_ckpt.is_dir(), proc.stdout.read().decode()[-2000:]
    assert max(logged) < STEPS, "the run finished before it was killed"
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    one, again = losses(single_device_run), losses(out)
    assert sorted(again) == list(range(1, STEPS + 1))
    a = np.array([one[s] for s in range(1, STEPS + 1)])
    b = np.array([again[s] for s in range(1, STEPS + 1)])
    np.testing.assert_allclose(b, a, rtol=1e-6)


def test_foreign_architecture_is_refused_with_the_differences(
    dataset, text_encoder, single_device_run
):
    cfg = config(dataset, single_device_run, model="default", steps=STEPS + 1)
    with pytest.raises(CheckpointError, match="channels"):
        train(cfg, text_encoder=text_encoder)
    saved = json.loads((single_device_run / "config.json").read_text())
    assert saved["train"]["model"] == "tiny"  # The run's own config is kept.


def test_bad_batches_are_reported(tmp_path, text_encoder):
    from jflow.data.shards import read_manifest, write_manifest

    ds = tmp_path / "ds"
    write_dataset(ds, n=8)
    manifest = read_manifest(ds)
    manifest["normalization"]["mean"][2] = 3e38  # Normalised depth overflows to -inf.
    manifest["normalization"]["std"][2] = 1e-6
    write_manifest(ds, {k: v for k, v in manifest.items() if k != "format_version"})
    with pytest.raises(DataError, match="step 1: batch flow holds NaN or inf"):
        train(config(ds, tmp_path / "run"), text_encoder=text_encoder)


def test_wrong_grid_is_a_shape_error():
    from jflow.models import FlowModelConfig
    from jflow.training.trainer import check_batch

    cfg = FlowModelConfig.tiny()
    batch = {"flow": np.zeros((2, 4, 6, 8, 4), np.float32), "depth": np.zeros((2, 8, 8))}
    with pytest.raises(ShapeError, match=r"expects \[B, 4, 8, 8, 4\]"):
        check_batch(batch, cfg, step=3)


def test_non_finite_loss_stops_or_skips(text_encoder, tmp_path):
    from jflow.data.shards import read_manifest, write_manifest

    ds = tmp_path / "ds"
    write_dataset(ds, n=8)
    manifest = read_manifest(ds)
    manifest["normalization"]["mean"] = [-1e25, -1e25, -1e25]  # Finite batches of ~1e31:
    manifest["normalization"]["std"] = [1e-6, 1e-6, 1e-6]  # the squared error overflows.
    write_manifest(ds, {k: v for k, v in manifest.items() if k != "format_version"})
    with pytest.raises(TrainingError, match="step 1: the loss or a gradient is not finite"):
        train(config(ds, tmp_path / "stop"), text_encoder=text_encoder)
    summary = train(
        config(ds, tmp_path / "skip", on_nan="skip", steps=STEPS), text_encoder=text_encoder
    )
    assert summary["skipped_steps"] == STEPS


def test_load_trained_model_returns_the_ema_weights(single_device_run):
    import jax
    from flax import nnx

    from jflow.training.checkpoint import Checkpointer
    from jflow.training.trainer import load_trained_model

    model, model_config, step = load_trained_model(single_device_run)
    assert step == STEPS
    assert model_config.num_frames == 5 and model_config.grid_hw == (4, 4)
    ema_model, *_ = load_trained_model(single_device_run, use_ema=True)
    raw_model, *_ = load_trained_model(single_device_run, use_ema=False)
    ema = jax.tree.leaves(nnx.state(ema_model, nnx.Param))
    raw = jax.tree.leaves(nnx.state(raw_model, nnx.Param))
    # The EMA lags the weights: after 24 steps with decay 0.999 the two differ.
    assert any(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) > 0
        for a, b in zip(ema, raw, strict=True)
    )
    assert Checkpointer(single_device_run).latest_step() == STEPS
    with pytest.raises(DataError, match="not a training run"):
        load_trained_model(single_device_run / "logs")


def test_ema_decay_warms_up_to_its_maximum():
    from jflow.training.trainer import ema_decay_at

    decays = [float(ema_decay_at(0.999, s)) for s in (0, 10, 90, 1000, 20000)]
    np.testing.assert_allclose(decays[:4], [0.1, 11 / 20, 0.91, 1001 / 1010], rtol=1e-6)
    assert decays[4] == pytest.approx(0.999)
    # What a fixed decay would leave of the initial weights after 1000 steps, and what is left now.
    left = np.prod([1.0 - (1.0 - float(ema_decay_at(0.999, s))) for s in range(1000)])
    assert 0.999**1000 > 0.3 and left < 1e-2


def test_objective_settings_reach_the_model_config(tmp_path):
    config = TrainConfig(
        data=tmp_path,
        visibility_weight=0.5,
        time_shift=3.0,
        displacement_scale=6.0,
        text_dropout=0.2,
        point_loss="pseudo_huber",
        huber_c=0.1,
        motion_levels=(False, True),
        point_freqs=8,
        frame_patch=4,
        grid_embedding=True,
    )
    model_config = config.model_config(8, (8, 8))
    objective = model_config.objective
    assert (
        objective.visibility_weight,
        objective.time_shift,
        objective.displacement_scale,
        objective.text_drop_prob,
        objective.point_loss,
        objective.huber_c,
    ) == (0.5, 3.0, 6.0, 0.2, "pseudo_huber", 0.1)
    assert [model_config.motion_at(level) for level in (0, 1)] == [False, True]
    default = TrainConfig(data=tmp_path).model_config(8, (8, 8))
    assert [default.motion_at(level) for level in (0, 1)] == [True, True]
    assert (model_config.point_freqs, default.point_freqs) == (8, 6)  # 6: the preset's
    assert (model_config.frame_patch, default.frame_patch) == (4, 2)  # 2: the preset's
    # The preset's pairs fall back to single frames for an odd clip length.
    assert TrainConfig(data=tmp_path).model_config(5, (8, 8)).frame_patch == 1
    assert (model_config.grid_embedding, default.grid_embedding) == (True, False)
    # `jflow train` without options trains exactly the default preset.
    from jflow.models.config import FlowModelConfig

    assert TrainConfig(data=tmp_path).model_config(16, (16, 16)) == FlowModelConfig.default()
    assert (default.objective.time_shift, default.objective.displacement_scale) == (3.0, 6.0)
    assert (default.objective.sampler, default.objective.steps) == ("euler", 2)
    # Another objective does not inherit the preset's few-step sampler.
    ddpm = TrainConfig(data=tmp_path, objective="ddpm_eps").model_config(8, (8, 8)).objective
    assert (ddpm.sampler, ddpm.steps) == ("ddim", 50)
    with pytest.raises(ConfigError, match="displacement_scale"):
        TrainConfig(data=tmp_path, displacement_scale=0.0).model_config(8, (8, 8))
    with pytest.raises(ConfigError, match="motion_levels"):
        TrainConfig(data=tmp_path, motion_levels=(True,)).model_config(8, (8, 8))
    with pytest.raises(ConfigError, match="point_freqs"):
        TrainConfig(data=tmp_path, point_freqs=-1).validate()
    with pytest.raises(ConfigError, match="frame_patch"):
        TrainConfig(data=tmp_path, frame_patch=-1).validate()
    with pytest.raises(ConfigError, match="sgd"):
        TrainConfig(data=tmp_path, optimizer="sgd").validate()
    with pytest.raises(ConfigError, match="frame_patch"):
        TrainConfig(data=tmp_path, frame_patch=3).model_config(8, (8, 8))


def test_a_saved_run_config_compares_equal_and_old_runs_read_new_fields_as_defaults(tmp_path):
    from jflow.training.trainer import _check_run_config

    config = TrainConfig(data=tmp_path, out=tmp_path / "run", motion_levels=(False, True))
    model_config = config.model_config(8, (8, 8))
    run = tmp_path / "run"
    run.mkdir()
    _check_run_config(run, config, model_config)  # writes config.json
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"] == config.to_dict()  # tuples saved as lists compare equal
    assert saved["train"]["motion_levels"] == [False, True]
    _check_run_config(run, config, model_config)  # the same settings resume

    # A run saved before point_loss, huber_c, motion_levels, point_freqs, frame_patch,
    # grid_embedding and optimizer: it trained with AdamW on single frames, whatever today's
    # defaults, and resumes with those settings.
    plain = TrainConfig(data=tmp_path, out=run, optimizer="adamw", frame_patch=1)
    old = {"train": plain.to_dict(), "model": plain.model_config(8, (8, 8)).to_dict()}
    for key in (
        "point_loss",
        "huber_c",
        "motion_levels",
        "point_freqs",
        "frame_patch",
        "grid_embedding",
        "optimizer",
    ):
        del old["train"][key]
    del old["model"]["objective"]["point_loss"], old["model"]["objective"]["huber_c"]
    del old["model"]["grid_embedding"], old["model"]["frame_patch"]
    (run / "config.json").write_text(json.dumps(old))
    _check_run_config(run, plain, plain.model_config(8, (8, 8)))
    (run / "config.json").write_text(json.dumps(old))
    changed = dataclasses.replace(plain, point_loss="pseudo_huber")
    with pytest.raises(CheckpointError, match="point_loss: 'mse' -> 'pseudo_huber'"):
        _check_run_config(run, changed, changed.model_config(8, (8, 8)))
    (run / "config.json").write_text(json.dumps(old))
    muon = dataclasses.replace(plain, optimizer="muon")
    with pytest.raises(CheckpointError, match="optimizer: 'adamw' -> 'muon'"):
        _check_run_config(run, muon, muon.model_config(8, (8, 8)))
    # Today's defaults (Muon, frame pairs) are refused with both differences listed.
    (run / "config.json").write_text(json.dumps(old))
    today = TrainConfig(data=tmp_path, out=run)
    with pytest.raises(CheckpointError, match="(?s)optimizer: 'adamw' -> 'muon'.*frame_patch"):
        _check_run_config(run, today, today.model_config(8, (8, 8)))
    # A run saved with "the preset's" frame grouping (0) when the preset had single frames
    # resumes with the value spelled out, and not with today's preset (pairs).
    (run / "config.json").write_text(
        json.dumps({**old, "train": plain.to_dict() | {"frame_patch": 0}})
    )
    _check_run_config(run, plain, plain.model_config(8, (8, 8)))
    (run / "config.json").write_text(
        json.dumps({**old, "train": plain.to_dict() | {"frame_patch": 0}})
    )
    pairs = dataclasses.replace(plain, frame_patch=0)
    with pytest.raises(CheckpointError, match="frame_patch: saved 1 != current 2"):
        _check_run_config(run, pairs, pairs.model_config(8, (8, 8)))


def test_muon_orthogonalises_the_hidden_kernels_and_a_run_remembers_it(
    dataset, text_encoder, tmp_path
):
    import jax
    import optax
    from flax import nnx

    from jflow.models import FlowUNet
    from jflow.models.config import FlowModelConfig
    from jflow.training.trainer import load_trained_model, muon_dimensions

    model = FlowUNet(FlowModelConfig.tiny(), rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    dims = muon_dimensions(params)
    specs = {
        jax.tree_util.keystr(path): spec
        for path, spec in jax.tree_util.tree_leaves_with_path(
            dims, is_leaf=lambda x: x is None or isinstance(x, optax.contrib.MuonDimensionNumbers)
        )
    }
    shapes = {
        jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(params)
    }
    assert specs.keys() == shapes.keys()
    muon = {k for k, s in specs.items() if s is not None}
    for key in muon:
        assert "kernel" in key and "conv_in" not in key and "conv_out" not in key
        assert specs[key].output_axis == (3 if len(shapes[key]) == 4 else 1)
    # Every hidden kernel is Muon's; the first and last convolutions, biases, norms, embeddings
    # stay with AdamW.
    hidden = {
        k for k, s in shapes.items() if "kernel" in k and "conv_in" not in k and "conv_out" not in k
    }
    assert muon == hidden and len(muon) > 20
    assert specs["['conv_out']['kernel'].value"] is None

    out = tmp_path / "muon"
    train(
        config(dataset, out, steps=4, checkpoint_every=2, optimizer="muon"),
        text_encoder=text_encoder,
    )
    run_losses = losses(out)
    assert sorted(run_losses) == [1, 2, 3, 4] and np.all(np.isfinite(list(run_losses.values())))
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["optimizer"] == "muon"
    _, _, step = load_trained_model(out)
    assert step == 4
    with pytest.raises(CheckpointError, match="optimizer: 'muon' -> 'adamw'"):
        train(config(dataset, out, steps=6, optimizer="adamw"), text_encoder=text_encoder)
