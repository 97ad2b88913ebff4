"""Training the flow diffuser: one jitted, sharded train step, checkpoints, metrics, resume.

``jflow train`` is a thin wrapper over :func:`train`. The train step follows the NNX pattern of
openpi and the Flax gemma example: the model is split into a graph definition and its
parameters (``nnx.split``), the step is a pure ``jax.jit`` function of the parameters, optimizer
state and EMA with explicit shardings over a ``(data, fsdp)`` mesh, and the model is merged
back (``nnx.merge``) inside the step. Randomness is ``fold_in(seed, step)``, so a resumed run
draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array
from tqdm.auto import tqdm

from jflow.data.pipeline import PipelineConfig, make_dataset
from jflow.errors import CheckpointError, ConfigError, DataError, ShapeError, TrainingError
from jflow.models.config import FlowModelConfig, config_diff
from jflow.training.checkpoint import Checkpointer
from jflow.training.config import (
    LEGACY_TRAIN_VALUES,
    PRESET_OVERRIDES,
    RESUMABLE_FIELDS,
    TrainConfig,
)
from jflow.training.mesh import (
    batch_sharding,
    check_batch_divisible,
    make_mesh,
    replicated,
    state_shardings,
)
from jflow.training.tensorboard import MetricsWriter


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=min(config.warmup_steps, max(config.steps - 1, 1)),
        decay_steps=max(config.steps, 2),
        end_value=config.learning_rate * 0.1,
    )
    if config.optimizer == "muon":
        update = optax.contrib.muon(
            schedule,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            adam_b1=0.9,
            adam_b2=0.999,
            adam_weight_decay=config.weight_decay,
            muon_weight_dimension_numbers=muon_dimensions,
            consistent_rms=0.2,
        )
    else:
        update = optax.adamw(
            schedule, b1=0.9, b2=0.999, eps=config.adam_eps, weight_decay=config.weight_decay
        )
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), update)


MUON_EXCLUDED = ("conv_in", "conv_out")
"""Parameters under these names stay with AdamW under ``--optimizer muon`` (Muon is meant for
the hidden layers; the network's first and last layers map to and from the data)."""


def muon_dimensions(params):
    """Per parameter: how Muon reads it as a matrix, or None for AdamW.

    Dense kernels ``[in, out]`` are matrices as they are; convolution kernels
    ``[kh, kw, in, out]`` are orthogonalised as ``[kh * kw * in, out]``. Biases, norm scales,
    learned embeddings (``pos``, ``null_token``, not named ``kernel``) and the kernels of
    :data:`MUON_EXCLUDED` get None.
    """

    def spec(path, leaf):
        names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        if "kernel" not in names or any(n in MUON_EXCLUDED for n in names):
            return None
        if leaf.ndim == 2:
            return optax.contrib.MuonDimensionNumbers(reduction_axis=0, output_axis=1)
        if leaf.ndim == 4:
            return optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
        return None

    return jax.tree_util.tree_map_with_path(spec, params)


def _tree_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def ema_decay_at(max_decay: float, step) -> Array:
    """EMA decay for the update after ``step`` optimizer steps: ``min(max_decay, (1+s)/(10+s))``.

    The warm-up (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) keeps a short
    run's EMA from staying near the random initial weights: with a fixed 0.999, 1000 steps
    would still carry ``0.999**1000 = 37%`` of the initialisation.
    """
    s = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(max_decay), (1.0 + s) / (10.0 + s))


def make_train_step(graphdef, rest, optimizer, loss_fn, config: TrainConfig):
    """The pure train step ``(state, batch, step) -> (state, metrics)``.

    ``state`` is ``{"params", "opt_state", "ema"}``; ``batch`` holds ``flow``, ``rgb``,
    ``depth``, ``text_tokens`` and ``text_mask``; ``loss_fn(model, batch, key)`` returns
    ``(loss, metrics)`` (:func:`jflow.models.loss_fn`, which also drops instructions for
    classifier-free guidance). A non-finite loss or gradient leaves the state unchanged and reports
    ``finite = 0`` (the host then stops or skips, as ``config.on_nan`` says).
    """
    base_key = jax.random.key(config.seed)

    def step_fn(state, batch, step):
        key = jax.random.fold_in(base_key, step)

        def loss_of(params):
            model = nnx.merge(graphdef, params, rest)
            return loss_fn(model, batch, key)

        (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
        finite = jnp.isfinite(loss) & _tree_finite(grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        decay = ema_decay_at(config.ema_decay, step)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], params)
        new_state = jax.lax.cond(
            finite,
            lambda: {"params": params, "opt_state": opt_state, "ema": ema},
            lambda: state,
        )
        metrics = {
            **aux,
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "finite": finite.astype(jnp.float32),
        }
        return new_state, metrics

    return step_fn


def check_batch(batch: dict, model_config: FlowModelConfig, step: int) -> None:
    """Host-side checks before a batch reaches the device: shapes and finiteness."""
    flow = batch["flow"]
    t, gh, gw = model_config.num_frames, *model_config.grid_hw
    if flow.ndim != 5 or flow.shape[1:] != (t, gh, gw, 4):
        raise ShapeError(
            f"step {step}: batch flow has shape {flow.shape}, the model expects [B, {t}, {gh}, {gw}, 4] "
            f"({t} frames on a {gh}x{gw} grid)"
        )
    for key in ("flow", "depth"):
        bad = ~np.isfinite(batch[key])
        if bad.any():
            examples = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)).tolist()
            tasks = [str(batch["task_id"][i]) for i in examples] if "task_id" in batch else []
            raise DataError(
                f"step {step}: batch {key} holds NaN or inf in examples {examples} (tasks {tasks}); "
                "the data is corrupt or was normalised with bad statistics"
            )


def train(config: TrainConfig, *, text_encoder=None, loss_fn=None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary (final step, last loss, steps per second)."""
    from jflow.data.shards import read_manifest
    from jflow.models import FlowUNet
    from jflow.models import loss_fn as model_loss

    config = config.validate()
    manifest = read_manifest(config.data)
    missing = [k for k in ("frames", "grid", "tasks", "normalization") if k not in manifest]
    if missing:
        raise DataError(
            f"{config.data}/manifest.json lacks {', '.join(missing)}: not a flow dataset"
        )
    text = text_encoder or config.make_text_encoder()
    model_config = dataclasses.replace(
        config.model_config(int(manifest["frames"]), tuple(manifest["grid"])), text_dim=text.dim
    )
    loss_fn = loss_fn or model_loss
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_config(run_dir, config, model_config)

    all_devices = jax.devices()
    if config.devices != -1 and not 1 <= config.devices <= len(all_devices):
        raise ConfigError(f"devices must be -1 or in [1, {len(all_devices)}], got {config.devices}")
    used = all_devices if config.devices == -1 else all_devices[: config.devices]
    mesh = make_mesh(fsdp=config.fsdp, devices=used)
    check_batch_divisible(config.batch_size, mesh)
    process_count = jax.process_count()
    pipeline = PipelineConfig(
        batch_size=config.batch_size,
        seed=config.seed,
        shard_index=jax.process_index(),
        shard_count=process_count,
    )
    data_iter = iter(make_dataset(config.data, pipeline))
    text.encode([t for task in manifest["tasks"] for t in task["instructions"]])  # Warm the cache.

    model = FlowUNet(model_config, rngs=nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = make_optimizer(config)
    state = initial_state(params, optimizer)
    shardings = state_shardings(mesh, state)
    state = jax.device_put(state, shardings)
    rest = jax.device_put(rest, replicated(mesh))
    checkpointer = Checkpointer(run_dir, max_to_keep=config.keep_checkpoints)
    start_step = 0
    latest = checkpointer.latest_step()
    if latest is not None:
        meta = checkpointer.read_meta(latest)
        diff = config_diff(meta["model_config"], model_config)
        if diff:
            raise CheckpointError(
                f"the checkpoint in {checkpointer.directory} was trained with another architecture:\n  "
                + "\n  ".join(diff)
            )
        state = checkpointer.restore(latest, state, data_iter)
        start_step = latest
        print(f"resuming {run_dir} from step {latest}")

    step_fn = make_train_step(graphdef, rest, optimizer, loss_fn, config)
    in_batch = batch_sharding(mesh)
    from jflow.models import FAST_COMPILE

    jit_step = jax.jit(
        step_fn,
        in_shardings=(shardings, in_batch, None),
        out_shardings=(shardings, None),
        donate_argnums=(0,),
        compiler_options=FAST_COMPILE if config.fast_compile else None,
    )

    meta = {
        "model_config": model_config.to_dict(),
        "train_config": config.to_dict(),
        "dataset": str(config.data),
    }
    writer = MetricsWriter(run_dir / "logs") if jax.process_index() == 0 else None
    started = time.perf_counter()
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not config.progress,
    )
    last = {}
    skipped = 0
    step = start_step
    try:
        while step < config.steps:
            batch = next(data_iter)
            check_batch(batch, model_config, step + 1)
            tokens, mask = text.encode(batch["instruction"])
            device_batch = {
                "flow": batch["flow"],
                "rgb": batch["rgb"],
                "depth": batch["depth"],
                "text_tokens": tokens,
                "text_mask": mask,
            }
            device_batch = {
                k: jax.make_array_from_process_local_data(in_batch, np.asarray(v))
                for k, v in device_batch.items()
            }
            state, metrics = jit_step(state, device_batch, jnp.asarray(step, jnp.int32))
            step += 1
            if float(metrics["finite"]) < 1.0:
                if config.on_nan == "stop":
                    checkpointer.wait()
                    raise TrainingError(
                        f"step {step}: the loss or a gradient is not finite (loss {float(metrics['loss'])}); "
                        f"training stopped, the last good checkpoint is in {checkpointer.directory}"
                    )
                skipped += 1
            if step % config.log_every == 0 or step == config.steps:
                last = {k: float(v) for k, v in metrics.items()}
                elapsed = time.perf_counter() - started
                last["steps_per_second"] = (step - start_step) / max(elapsed, 1e-9)
                last["skipped_steps"] = skipped
                if writer is not None:
                    writer.scalars(step, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}", sps=f"{last['steps_per_second']:.2f}")
            bar.update(1)
            out_of_time = (
                config.max_minutes is not None
                and (time.perf_counter() - started) > 60 * config.max_minutes
            )
            if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
                checkpointer.save(step, state, data_iter, meta)
            if out_of_time:
                break
    finally:
        bar.close()
        checkpointer.close()
        if writer is not None:
            writer.close()
    return {"step": step, "run_dir": str(run_dir), **last}


def _check_run_config(run_dir: Path, config: TrainConfig, model_config: FlowModelConfig) -> None:
    """A run folder keeps its config; resuming with results-changing differences is refused."""
    path = run_dir / "config.json"
    current = {"train": config.to_dict(), "model": model_config.to_dict()}
    if path.is_file():
        saved = json.loads(path.read_text())
        # Fields added after the run was saved read as what it trained with: the training
        # settings' legacy values or defaults, and the model's legacy values
        # (FlowModelConfig.from_dict).
        saved_train = {
            **TrainConfig(data=config.data).to_dict(),
            **LEGACY_TRAIN_VALUES,
            **saved["train"],
        }
        diffs = [
            f"{k}: {saved_train[k]!r} -> {v!r}"
            for k, v in current["train"].items()
            if k not in RESUMABLE_FIELDS | PRESET_OVERRIDES and saved_train[k] != v
        ]
        diffs += config_diff(FlowModelConfig.from_dict(saved["model"]), model_config)
        if diffs:
            raise CheckpointError(
                f"{run_dir} holds a run with another configuration; resume it with the same "
                "settings or choose another --out:\n  " + "\n  ".join(diffs)
            )
    path.write_text(json.dumps(current, indent=2))


def initial_state(params, optimizer: optax.GradientTransformation) -> dict:
    """The train state ``{"params", "opt_state", "ema"}`` at step 0 (EMA starts at the weights)."""
    return {
        "params": params,
        "opt_state": optimizer.init(params),
        "ema": jax.tree.map(jnp.copy, params),
    }


def load_trained_model(run_dir: str | Path, *, use_ema: bool = True):
    """The trained model of a run folder (EMA weights by default), its config and its step."""
    from jflow.models import FlowUNet

    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise DataError(f"{run_dir} is not a training run: config.json not found")
    saved = json.loads(path.read_text())
    model_config = FlowModelConfig.from_dict(saved["model"])
    train_config = TrainConfig(
        **{**saved["train"], "data": Path(saved["train"]["data"]), "out": run_dir}
    )
    graphdef, params, rest = nnx.split(FlowUNet(model_config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    checkpointer = Checkpointer(run_dir)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise DataError(f"{run_dir} has no checkpoint")
        template = initial_state(params, make_optimizer(train_config))
        restored = checkpointer.restore(step, template)
    finally:
        checkpointer.close()
    weights = restored["ema"] if use_ema else restored["params"]
    return nnx.merge(graphdef, weights, rest), model_config, step


def run_text_encoder(run_dir: str | Path):
    """The frozen text encoder a run folder was trained with (from its config.json)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise DataError(f"{run_dir} is not a training run: config.json not found")
    saved = json.loads(path.read_text())["train"]
    kind = saved.get("text_encoder", "minilm")
    folder = saved.get("text_encoder_path")
    from jflow.models.text_encoder import TextEncoder

    return TextEncoder(kind, folder)
