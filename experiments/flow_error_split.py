"""Where a trained flow model errs: its held-out error split into image-plane and depth parts.

For a ``jflow train`` run and a held-out dataset, samples flows for the episodes of the chosen
tasks and prints, per task and beside the mean training flow of the task, the mean over visible
points and frames of the error's norm, its part in the camera's image plane (camera x, y) and
its part along the optical axis (camera z), in cm, with the ground truth's mean displacement
for scale.

    python experiments/flow_error_split.py --run runs/issue4s/flow30_scale12 \
        --data runs/issue4s/heldout --tasks turn_on_top_burner move_kettle_to_top_right_burner

(About a minute on the 2-core machine; docs/training.md quotes the numbers.)
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import jax
import numpy as np

from jflow.evaluation.baselines import MeanFlowBaseline
from jflow.evaluation.clips import EvalClip, load_eval_clips
from jflow.evaluation.config import EvalFlowConfig
from jflow.evaluation.flow_eval import (
    check_run_folder,
    clips_conditioning,
    resolve_train_data,
    sampled_world_points,
)
from jflow.flow.normalization import FlowStats
from jflow.models import sample
from jflow.training.trainer import load_trained_model, run_text_encoder


def split_errors(pred_camera: np.ndarray, clip: EvalClip) -> tuple[float, float, float]:
    """``(norm, image plane, depth)`` mean errors (m) of camera-frame predictions
    ``[..., T, N, 3]`` over the clip's visible points."""
    err = (np.asarray(pred_camera) - clip.points_camera)[..., clip.visible, :]
    return (
        float(np.linalg.norm(err, axis=-1).mean()),
        float(np.linalg.norm(err[..., :2], axis=-1).mean()),
        float(np.abs(err[..., 2]).mean()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--episodes-per-task", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    saved = check_run_folder(args.run)
    train_dir = resolve_train_data(EvalFlowConfig(run=args.run, data=args.data), saved)
    held, _ = load_eval_clips(args.data)
    train, manifest = load_eval_clips(train_dir)
    stats = FlowStats.from_dict(manifest["normalization"])
    mean_flow = MeanFlowBaseline(train)
    per_task: dict[str, list[EvalClip]] = defaultdict(list)
    for clip in held:
        if clip.task_id in args.tasks and len(per_task[clip.task_id]) < args.episodes_per_task:
            per_task[clip.task_id].append(clip)
    missing = sorted(set(args.tasks) - set(per_task))
    if missing:
        raise SystemExit(f"no held-out episode of {', '.join(missing)} in {args.data}")
    clips = [c for task in args.tasks for c in per_task[task]]

    model, _, step = load_trained_model(args.run)
    text = run_text_encoder(args.run)
    cond = clips_conditioning(clips, stats, text)
    samples = np.asarray(
        sample(model, cond, rng=jax.random.key(args.seed), num_samples=args.samples)
    )
    print(f"{args.run} (step {step}), {args.samples} samples per episode; cm")
    print("| task | episode | GT motion | model: norm / image plane / depth | mean flow: same |")
    print("| --- | --- | --- | --- | --- |")
    for clip, sampled in zip(clips, samples, strict=True):
        model_camera = clip.to_camera(sampled_world_points(sampled, stats, clip))
        mean_camera = clip.to_camera(mean_flow.predict(clip))
        cam = clip.points_camera
        motion = float(np.linalg.norm((cam - cam[:1])[clip.visible], axis=-1).mean())
        m = "/".join(f"{100 * v:.2f}" for v in split_errors(model_camera, clip))
        b = "/".join(f"{100 * v:.2f}" for v in split_errors(mean_camera, clip))
        print(f"| {clip.task_id} | {clip.index} | {100 * motion:.2f} | {m} | {b} |")


if __name__ == "__main__":
    main()
