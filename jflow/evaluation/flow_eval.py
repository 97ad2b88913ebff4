"""``jflow eval-flow``: 3D ADE/FDE of sampled flows on held-out episodes, beside baselines.

For every held-out episode the trained model (EMA weights) samples ``samples_per_episode`` flows
conditioned on the episode's first RGB-D frame, instruction and initial points (frame 0 of its
grid flow, normalised with the *training* dataset's statistics, as in training). Each sample is
mapped back to 3D: de-normalised to pixels ``(x, y)`` and camera depth, unprojected with the
clip's intrinsics to the camera frame and moved to the world with the clip's camera pose. It is
compared with the ground-truth world points over the points visible in the ground truth
(:func:`jflow.metrics.flow3d.flow_errors`: ADE = mean over visible ``(t, n)`` of the 3D
distance, FDE = the same on the last frame).

Two readings of a sample are reported:

- **raw**: the sampled absolute positions;
- **anchored**: ``p_t = p_0 + (q_t - q_0)`` with ``q`` the raw sample and ``p_0`` the known
  initial points in 3D: the sample's *displacements* applied to the true starting points. With
  frame-0 clamping (the default) the sample's frame 0 already is the initial points, so both
  readings agree to float precision; without clamping they differ.

The report's headline model row uses the anchored reading only when its overall ADE is lower
(by more than ``HEADLINE_MARGIN``), and says which one it uses. The baselines
(:mod:`jflow.evaluation.baselines`) and the direction test (:mod:`jflow.evaluation.direction`)
run in the same call on the same episodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float
from tqdm.auto import tqdm

from jflow.errors import DataError, ShapeError
from jflow.evaluation.baselines import MeanFlowBaseline, NearestNeighbourBaseline, zero_motion
from jflow.evaluation.clips import EvalClip, load_eval_clips
from jflow.evaluation.config import EvalFlowConfig
from jflow.evaluation.direction import (
    direction_cosine,
    direction_mask,
    mean_displacement,
    paired_task_ids,
)
from jflow.flow.normalization import FlowStats
from jflow.metrics.flow3d import flow_errors

MODEL_METHODS = ("model_raw", "model_anchored", "model_sample_mean")
"""Per sample (raw, anchored: mean of the per-sample errors) and the point-wise mean of the
anchored samples (one prediction: the samples' average motion, which trades the samples'
diversity for a lower expected error)."""
BASELINES = ("zero_motion", "mean_flow", "nearest_neighbour")
METHODS = (*MODEL_METHODS, *BASELINES)
HEADLINE_MARGIN = 1e-6
"""Meters by which the anchored ADE must beat the raw ADE to become the headline (so that float
noise between two equal readings does not pick one)."""


# ---------------------------------------------------------------------- geometry of samples


def sampled_world_points(
    samples: Float[np.ndarray, "S T h w 4"], stats: FlowStats, clip: EvalClip
) -> Float[np.ndarray, "S T N 3"]:
    """Normalised grid samples of one clip -> world points (meters), grid order.

    De-normalise ``(x, y, depth)`` with ``stats``, unproject with the clip's intrinsics to its
    camera frame, and map to the world with its camera pose.
    """
    from jflow.flow.normalization import denormalize_grid
    from jflow.geometry.camera import unproject

    samples = np.asarray(samples, np.float32)
    if samples.ndim != 5 or samples.shape[-1] != 4:
        raise ShapeError(f"samples must be [S, T, h, w, 4], got shape {samples.shape}")
    s, t = samples.shape[:2]
    grid = np.asarray(denormalize_grid(samples, stats)).reshape(s, t, -1, 4)
    if grid.shape[2] != clip.points.shape[1]:
        raise ShapeError(
            f"samples hold {grid.shape[2]} points per frame, episode {clip.index} has "
            f"{clip.points.shape[1]}"
        )
    camera = np.asarray(unproject(grid[..., :2], grid[..., 2], clip.intrinsics), np.float64)
    return clip.to_world(camera)


def clips_conditioning(clips: Sequence[EvalClip], stats: FlowStats, text_encoder):
    """The model's :class:`~jflow.models.Conditioning` for clips: instruction tokens, first
    RGB-D frame and the initial points, normalised with ``stats`` (as a training batch is)."""
    from jflow.flow.normalization import normalize_grid_numpy
    from jflow.models import conditioning_from_batch

    if not clips:
        raise DataError("clips_conditioning needs at least one clip")
    first = np.stack([c.grid[:1] for c in clips])  # Only frame 0 is conditioning.
    batch = {
        "flow": normalize_grid_numpy(first, stats),
        "rgb": np.stack([c.rgb for c in clips]),
        "depth": np.stack([c.depth for c in clips]),
    }
    return conditioning_from_batch(batch, *text_encoder.encode([c.instruction for c in clips]))


def anchor(
    pred: Float[np.ndarray, "*S T N 3"], initial_points: Float[np.ndarray, "N 3"]
) -> Float[np.ndarray, "*S T N 3"]:
    """``p_t = p_0 + (pred_t - pred_0)``: a prediction's displacements on the known points."""
    pred = np.asarray(pred, np.float64)
    return np.asarray(initial_points, np.float64) + (pred - pred[..., :1, :, :])


# ---------------------------------------------------------------------- inputs


def check_run_folder(run: Path) -> dict:
    """The saved configs of a run folder; a clear error when it is not a trained run."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"run folder {run} does not exist")
    path = run / "config.json"
    if not path.is_file():
        raise DataError(f"{run} is not a training run: config.json not found")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if "model" not in saved or "train" not in saved:
        raise DataError(f"{path} lacks the model or train config: not a jflow train run")
    ckpt = run / "checkpoints"
    steps = [p for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit()] if ckpt.is_dir() else []
    if not steps:
        raise DataError(
            f"{run} has no checkpoint ({ckpt}/<step>/ not found): the run has not saved one yet"
        )
    return saved


def resolve_train_data(config: EvalFlowConfig, saved: dict) -> Path:
    if config.train_data is not None:
        path = Path(config.train_data)
    else:
        recorded = saved["train"].get("data")
        if not recorded:
            raise DataError(f"{config.run}/config.json records no dataset; pass --train-data")
        path = Path(recorded)
    if not (path / "manifest.json").is_file():
        raise DataError(
            f"the training dataset {path} is not found (no manifest.json)"
            + ("" if config.train_data is not None else "; pass --train-data")
        )
    return path


def _check_fits(model_config, manifest: dict, dataset: Path, role: str) -> None:
    frames = int(manifest["frames"])
    grid = tuple(int(v) for v in manifest["grid"])
    if frames != model_config.num_frames or grid != tuple(model_config.grid_hw):
        raise ShapeError(
            f"the {role} dataset {dataset} has {frames} frames on a {grid[0]}x{grid[1]} grid, "
            f"the model was trained on {model_config.num_frames} frames on a "
            f"{model_config.grid_hw[0]}x{model_config.grid_hw[1]} grid"
        )


def _usable(clip: EvalClip) -> str | None:
    if not clip.visible.any():
        return "no ground-truth point is visible"
    if not clip.visible[-1].any():
        return "no ground-truth point is visible in the last frame (FDE undefined)"
    return None


# ---------------------------------------------------------------------- the evaluation


def evaluate_flow(config: EvalFlowConfig, *, text_encoder=None) -> dict[str, Any]:
    """Run the evaluation, write ``eval_flow.json``, ``eval_flow.md`` and ``eval_flow.png``
    into ``config.out_dir`` and return the report (the JSON's content)."""
    import jax

    from jflow.models import FAST_COMPILE, sample
    from jflow.models.config import FlowModelConfig
    from jflow.training.trainer import load_trained_model, run_text_encoder

    config = config.validate()
    started = time.perf_counter()
    saved = check_run_folder(config.run)
    model_config = FlowModelConfig.from_dict(saved["model"])
    train_dir = resolve_train_data(config, saved)
    held, held_manifest = load_eval_clips(config.data, limit=config.max_episodes)
    train, train_manifest = load_eval_clips(train_dir)
    _check_fits(model_config, held_manifest, Path(config.data), "held-out")
    _check_fits(model_config, train_manifest, train_dir, "training")
    stats = FlowStats.from_dict(train_manifest["normalization"])

    train_tasks = {c.task_id for c in train}
    unseen = sorted({c.task_id for c in held} - train_tasks)
    skipped = []
    if unseen and not config.skip_unseen_tasks:
        raise DataError(
            f"held-out tasks {', '.join(unseen)} have no clip in the training data {train_dir}, "
            "so the mean-flow baseline is undefined for them; pass --skip-unseen-tasks to leave "
            f"their episodes out (training tasks: {', '.join(sorted(train_tasks))})"
        )
    for clip in held:
        reason = "task absent from the training data" if clip.task_id in unseen else _usable(clip)
        if reason:
            skipped.append({"index": clip.index, "task_id": clip.task_id, "reason": reason})
    skipped_ids = {s["index"] for s in skipped}
    clips = [c for c in held if c.index not in skipped_ids]
    if not clips:
        raise DataError(f"no held-out episode of {config.data} can be evaluated: {skipped}")

    text = text_encoder if text_encoder is not None else run_text_encoder(config.run)
    mean_flow = MeanFlowBaseline(train)
    nearest = NearestNeighbourBaseline(
        train,
        text,
        image_size=config.nn_image_size,
        text_tolerance=config.nn_text_tolerance,
        max_depth=config.nn_max_depth,
    )
    model, model_config, step = load_trained_model(config.run)
    load_s = time.perf_counter() - started

    # Sample every episode: fixed batch shape (the last batch is padded), one compilation.
    b = min(config.batch_size, len(clips))
    batches = [clips[i : i + b] for i in range(0, len(clips), b)]
    options = FAST_COMPILE if config.fast_compile else None
    samples: list[np.ndarray] = []
    call_seconds = []
    for k, batch in enumerate(
        tqdm(batches, desc="eval-flow", unit="batch", disable=not config.progress)
    ):
        padded = batch + [batch[-1]] * (b - len(batch))
        cond = clips_conditioning(padded, stats, text)
        t0 = time.perf_counter()
        out = sample(
            model,
            cond,
            rng=jax.random.fold_in(jax.random.key(config.seed), k),
            num_samples=config.samples_per_episode,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            sampler=config.sampler,
            time_shift=config.sample_shift,
            clamp_first_frame=config.clamp_first_frame,
            compiler_options=options,
        )
        out = np.asarray(jax.block_until_ready(out))
        call_seconds.append(time.perf_counter() - t0)
        samples.extend(out[: len(batch)])

    paired = paired_task_ids()
    rows = []
    for clip, sampled in zip(clips, samples, strict=True):
        if not np.all(np.isfinite(sampled)):
            raise DataError(
                f"the model sampled NaN or inf for held-out episode {clip.index} "
                f"({clip.task_id}); the checkpoint in {config.run} is probably broken"
            )
        rows.append(
            _episode_row(
                clip, sampled, stats, mean_flow, nearest, paired, config.direction_min_motion
            )
        )

    report = _report(config, saved, train_dir, step, model_config, stats, rows, skipped, paired)
    train_keys = {(c.task_id, c.seed) for c in train}
    report["held_out_in_training"] = [
        {"index": c.index, "task_id": c.task_id, "seed": c.seed}
        for c in clips
        if (c.task_id, c.seed) in train_keys
    ]
    report["timing"] = {
        "load_seconds": round(load_s, 3),
        "sampling_calls": len(call_seconds),
        "first_call_seconds": round(call_seconds[0], 3),
        "later_call_seconds_mean": round(float(np.mean(call_seconds[1:])), 3)
        if len(call_seconds) > 1
        else None,
        "episodes_per_call": b,
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    from jflow.evaluation.report import write_report

    write_report(report, config.out_dir)
    return report


def _errors(pred: np.ndarray, clip: EvalClip) -> tuple[float, float]:
    e = flow_errors(pred, clip.points, clip.visible)
    return e.ade, e.fde


def _episode_row(
    clip: EvalClip,
    sampled: np.ndarray,
    stats: FlowStats,
    mean_flow: MeanFlowBaseline,
    nearest: NearestNeighbourBaseline,
    paired: frozenset[str],
    min_motion: float,
) -> dict[str, Any]:
    raw = sampled_world_points(sampled, stats, clip)  # [S, T, N, 3]
    anchored = anchor(raw, clip.points[0])
    match = nearest.retrieve(clip)
    mask = direction_mask(clip.visible)
    gt_motion = float(np.linalg.norm(mean_displacement(clip.points, mask)))
    has_direction = clip.task_id in paired and gt_motion >= min_motion
    methods: dict[str, dict[str, Any]] = {}
    sample_mean = anchored.mean(axis=0, keepdims=True)
    for name, preds in (
        ("model_raw", raw),
        ("model_anchored", anchored),
        ("model_sample_mean", sample_mean),
    ):
        errs = [_errors(p, clip) for p in preds]
        methods[name] = {
            "ade": float(np.mean([e[0] for e in errs])),
            "fde": float(np.mean([e[1] for e in errs])),
            "ade_samples": [e[0] for e in errs],
            "fde_samples": [e[1] for e in errs],
            "direction_cosine": [direction_cosine(p, clip.points, mask) for p in preds]
            if has_direction
            else None,
        }
    for name, pred in (
        ("zero_motion", zero_motion(clip)),
        ("mean_flow", mean_flow.predict(clip)),
        ("nearest_neighbour", nearest.predict(clip, match)),
    ):
        ade, fde = _errors(pred, clip)
        methods[name] = {
            "ade": ade,
            "fde": fde,
            "direction_cosine": [direction_cosine(pred, clip.points, mask)]
            if has_direction
            else None,
        }
    return {
        "index": clip.index,
        "task_id": clip.task_id,
        "instruction": clip.instruction,
        "seed": clip.seed,
        "paired_task": clip.task_id in paired,
        "gt_mean_displacement_m": gt_motion,
        "direction_defined": has_direction,
        "nearest_neighbour": {k: v for k, v in match.items() if k != "position"},
        "methods": methods,
    }


def _direction_summary(rows: list[dict], method: str) -> dict[str, Any]:
    def count(sub: list[dict]) -> dict[str, Any]:
        cosines = [c for r in sub for c in (r["methods"][method]["direction_cosine"] or [])]
        correct = int(sum(c > 0 for c in cosines))
        return {
            "correct": correct,
            "total": len(cosines),
            "fraction": correct / len(cosines) if cosines else None,
        }

    defined = [r for r in rows if r["direction_defined"]]
    out = count(defined)
    out["excluded_episodes"] = sum(
        1 for r in rows if r["paired_task"] and not r["direction_defined"]
    )
    out["per_task"] = {
        t: count([r for r in defined if r["task_id"] == t])
        for t in sorted({r["task_id"] for r in defined})
    }
    return out


def _method_summary(rows: list[dict], method: str) -> dict[str, Any]:
    def mean(sub: list[dict]) -> dict[str, Any]:
        return {
            "ade": float(np.mean([r["methods"][method]["ade"] for r in sub])),
            "fde": float(np.mean([r["methods"][method]["fde"] for r in sub])),
            "episodes": len(sub),
        }

    tasks = sorted({r["task_id"] for r in rows})
    summary = {
        "overall": mean(rows),
        "per_task": {t: mean([r for r in rows if r["task_id"] == t]) for t in tasks},
        "direction": _direction_summary(rows, method),
    }
    if method in MODEL_METHODS:
        summary["best_of_samples"] = {
            "ade": float(np.mean([min(r["methods"][method]["ade_samples"]) for r in rows])),
            "fde": float(np.mean([min(r["methods"][method]["fde_samples"]) for r in rows])),
        }
    return summary


def _report(
    config: EvalFlowConfig,
    saved: dict,
    train_dir: Path,
    step: int,
    model_config,
    stats: FlowStats,
    rows: list[dict],
    skipped: list[dict],
    paired: frozenset[str],
) -> dict[str, Any]:
    methods = {m: _method_summary(rows, m) for m in METHODS}
    raw_ade = methods["model_raw"]["overall"]["ade"]
    anchored_ade = methods["model_anchored"]["overall"]["ade"]
    headline = "model_anchored" if anchored_ade < raw_ade - HEADLINE_MARGIN else "model_raw"
    reason = (
        f"anchored ADE {anchored_ade:.6f} m is lower than raw ADE {raw_ade:.6f} m"
        if headline == "model_anchored"
        else f"anchored ADE {anchored_ade:.6f} m is not lower than raw ADE {raw_ade:.6f} m"
    )
    trained_on = saved["train"].get("data")
    return {
        "kind": "jflow.eval_flow",
        "run": str(config.run),
        "checkpoint_step": int(step),
        "model": saved["train"].get("model"),
        "objective": model_config.objective.kind,
        "data": str(config.data),
        "train_data": str(train_dir),
        "train_data_is_the_runs": trained_on is not None and Path(trained_on) == train_dir,
        "normalization": stats.to_dict(),
        "settings": {
            **config.to_dict(),
            "steps": config.steps or model_config.objective.steps,
            "sampler": config.sampler or model_config.objective.sampler,
            "sample_shift": config.sample_shift or model_config.objective.sample_shift,
        },
        "num_episodes": len(rows),
        "skipped_episodes": skipped,
        "tasks": sorted({r["task_id"] for r in rows}),
        "paired_tasks": sorted(paired & {r["task_id"] for r in rows}),
        "nearest_neighbour_same_task": float(
            np.mean([r["nearest_neighbour"]["task_id"] == r["task_id"] for r in rows])
        ),
        "headline": headline,
        "headline_reason": reason,
        "methods": methods,
        "episodes": rows,
    }


__all__ = [
    "BASELINES",
    "METHODS",
    "MODEL_METHODS",
    "anchor",
    "check_run_folder",
    "evaluate_flow",
    "sampled_world_points",
]
