"""TAPIR trained from random init on kitchen ground truth, against Lucas-Kanade, on held-out videos.

1. Renders human-style kitchen episodes of the six default tasks: a training set (seeds
   ``0 .. train_seeds-1``) and a held-out set (seeds ``eval_seed_start ..``), cached as .npz
   under ``--out``.
2. Trains a reduced-width TAPIR (``--tapir.*`` options, a :class:`TapirConfig`) from random
   init with ``jflow.tracking.tapir.make_train_step`` and the TAPIR losses on ground-truth
   tracks, for a wall-clock budget (compilation included), with a progress bar and a
   checkpoint (official Haiku layout) every ``checkpoint_every_s`` seconds.
3. Reloads the checkpoint and evaluates TAPIR (``TapirTracker``), Lucas-Kanade and a "static"
   reference (every point stays at its query position, always visible) on the held-out
   episodes with the same TAP-Vid "first" queries: average Jaccard, <delta^x_avg, occlusion
   accuracy, and seconds per video.

``python experiments/kitchen_tapir.py`` runs the configuration reported in docs/tapir.md;
``--help`` lists the options. Results go to ``<out>/results.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import tyro

from jflow.data.kitchen_dataset import DEFAULT_TASKS
from jflow.runtime import FUSION_EMITTERS_OFF, add_xla_flag, configure_rendering
from jflow.tracking.tapir.config import TapirConfig

SMALL_TAPIR = TapirConfig(
    channels_per_group=(16, 32, 64, 64),
    blocks_per_group=(1, 1, 1, 1),
    initial_conv_channels=16,
    mixer_hidden_dim=64,
    num_mixer_blocks=2,
    num_pips_iter=2,
)
"""TAPIR with 1/4 of the backbone widths, one block per group, a 2-block 64-wide mixer and 2
refinement iterations (the published model: 64..256 widths, 2 blocks per group, 12 blocks of
512, 4 iterations)."""


@dataclasses.dataclass(frozen=True)
class KitchenTapirConfig:
    """Options of the experiment; the defaults are the run reported in docs/tapir.md."""

    out: Path = Path("runs/kitchen_tapir")
    """Folder for the cached episodes, the checkpoint, the training log and results.json."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    resolution: int = 128
    """Rendered (square) video size in pixels; both trackers see these videos."""
    model_resolution: int = 64
    """TAPIR's working resolution (videos are resized to it; a multiple of 8)."""
    frames: int = 12
    num_points: int = 128
    """Ground-truth surface points sampled on the target object per episode."""
    train_seeds: int = 16
    """Training episodes per task: seeds 0 .. train_seeds-1."""
    eval_seed_start: int = 100
    eval_seeds: int = 4
    """Held-out episodes per task: seeds eval_seed_start .. eval_seed_start+eval_seeds-1."""
    budget_minutes: float = 15.0
    """Training wall-clock budget (first step's compilation included)."""
    max_steps: int | None = None
    """Optional cap on training steps (the budget still applies)."""
    batch_clips: int = 2
    queries_per_clip: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    seed: int = 0
    tapir: TapirConfig = SMALL_TAPIR
    checkpoint_every_s: float = 120.0
    fusion_emitters: bool = True
    """XLA CPU fusion emitters; on measured faster for this train step (docs/tapir.md)."""
    eval_only: bool = False
    """Skip training and evaluate the checkpoint already in ``out``."""
    eval_train_episodes: int = 6
    """Also evaluate TAPIR on this many training episodes (one per task, seed 0), to read
    under- or over-fitting."""
    progress: bool = True


# --------------------------------------------------------------------------- data
def _data_path(cfg: KitchenTapirConfig, split: str, seeds: range) -> Path:
    tag = f"{split}_r{cfg.resolution}_f{cfg.frames}_p{cfg.num_points}_s{seeds.start}-{seeds.stop}"
    tasks = hashlib.sha1(",".join(cfg.tasks).encode()).hexdigest()[:8]
    return cfg.out / "data" / f"{tag}_{tasks}.npz"


def render_split(cfg: KitchenTapirConfig, split: str, seeds: range) -> list[dict]:
    """Render (or load the cached) episodes of every task and seed: video, tracks, visible."""
    path = _data_path(cfg, split, seeds)
    if path.is_file():
        z = np.load(path)
        n = int(z["count"])
        return [
            {
                "task": str(z[f"task_{i}"]),
                "seed": int(z[f"seed_{i}"]),
                "video": z[f"video_{i}"],
                "tracks": z[f"tracks_{i}"],
                "visible": z[f"visible_{i}"],
            }
            for i in range(n)
        ]
    configure_rendering()
    from tqdm import tqdm

    from jflow.sim.episodes import KitchenWorld

    clips = []
    jobs = [(task, seed) for task in cfg.tasks for seed in seeds]
    with KitchenWorld(resolution=cfg.resolution) as world:
        for task, seed in tqdm(jobs, desc=f"render {split}", disable=not cfg.progress):
            ep = world.render_episode(task, seed, frames=cfg.frames, num_points=cfg.num_points)
            clips.append(
                {
                    "task": task,
                    "seed": seed,
                    "video": np.asarray(ep.clip.video),
                    "tracks": np.asarray(ep.clip.flow.tracks, np.float32),
                    "visible": np.asarray(ep.clip.flow.visible, bool),
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"count": np.array(len(clips))}
    for i, c in enumerate(clips):
        for k, v in c.items():
            arrays[f"{k}_{i}"] = np.asarray(v)
    np.savez_compressed(path, **arrays)
    return clips


# --------------------------------------------------------------------------- training
def train(cfg: KitchenTapirConfig, clips: list[dict]) -> dict:
    import jax
    import optax
    from tqdm import tqdm

    from jflow.tracking.tapir import init_tapir, make_optimizer, make_train_step
    from jflow.tracking.tapir.checkpoint import save_tapir_checkpoint
    from jflow.tracking.tapir.kitchen_data import stack_examples, training_example

    rng = np.random.default_rng(cfg.seed)
    usable = [c for c in clips if c["visible"].any()]
    model = init_tapir(cfg.tapir, seed=cfg.seed)
    schedule = optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
    optimizer = make_optimizer(model, schedule, cfg.weight_decay, cfg.clip_norm)
    res = (cfg.model_resolution, cfg.model_resolution)
    step_fn = make_train_step(initial_resolution=res)
    ckpt = cfg.out / "tapir_kitchen.npy"
    log_path = cfg.out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    budget = cfg.budget_minutes * 60.0

    def save() -> None:
        save_tapir_checkpoint(model, ckpt)

    (cfg.out / "tapir_config.json").write_text(json.dumps(dataclasses.asdict(cfg.tapir), indent=2))
    load_start = os.getloadavg()[0]  # Other processes on the machine slow the wall clock.
    history = []
    start = time.perf_counter()
    last_ckpt = start
    first_step_s = None
    step = 0
    bar = tqdm(
        total=round(budget),
        desc="train (budget s)",
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        disable=not cfg.progress,
    )
    shown = 0
    with log_path.open("a") as log:
        while time.perf_counter() - start < budget and (
            cfg.max_steps is None or step < cfg.max_steps
        ):
            picks = rng.choice(len(usable), size=cfg.batch_clips, replace=False)
            batch = stack_examples(
                [
                    training_example(
                        usable[i]["video"],
                        usable[i]["tracks"],
                        usable[i]["visible"],
                        cfg.queries_per_clip,
                        rng,
                    )
                    for i in picks
                ]
            )
            t0 = time.perf_counter()
            scalars = jax.device_get(step_fn(model, optimizer, batch))
            if first_step_s is None:
                first_step_s = time.perf_counter() - t0
            step += 1
            row = {k: float(v) for k, v in scalars.items()}
            if not np.isfinite(row["loss"]):
                raise FloatingPointError(f"training loss is {row['loss']} at step {step}")
            row.update(step=step, time_s=round(time.perf_counter() - start, 2))
            history.append(row)
            log.write(json.dumps(row) + "\n")
            now = time.perf_counter()
            elapsed = min(round(now - start), round(budget))
            bar.update(elapsed - shown)
            shown = elapsed
            recent = np.mean([h["loss"] for h in history[-20:]])
            bar.set_postfix(step=step, loss=f"{recent:.3f}")
            if now - last_ckpt >= cfg.checkpoint_every_s:
                save()
                last_ckpt = now
    bar.close()
    save()
    total = time.perf_counter() - start
    window = max(1, min(20, len(history) // 5))
    summary = {
        "steps": step,
        "train_wall_s": round(total, 1),
        "first_step_s": round(first_step_s or 0.0, 1),
        "step_s_after_first": round((total - (first_step_s or 0.0)) / max(step - 1, 1), 3),
        "loss_first": float(np.mean([h["loss"] for h in history[:window]])),
        "loss_last": float(np.mean([h["loss"] for h in history[-window:]])),
        "position_loss_first": float(np.mean([h["position_loss"] for h in history[:window]])),
        "position_loss_last": float(np.mean([h["position_loss"] for h in history[-window:]])),
        "loss_window_steps": window,
        "params": int(sum(np.size(v) for v in jax.tree.leaves(_params(model)))),
        "device": str(jax.devices()[0]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    (cfg.out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


# --------------------------------------------------------------------------- evaluation
class StaticTracker:
    """Reference: every point stays where it was queried and is always reported visible."""

    def track(self, video, queries):
        from jflow.tracking.interface import TrackResult

        t = video.shape[0]
        xy = np.asarray(queries)[:, [2, 1]]
        return TrackResult(np.repeat(xy[:, None], t, axis=1), np.ones((len(xy), t), bool))


def evaluate(trackers: dict, clips: list[dict]) -> dict[str, dict]:
    """Mean TAP-Vid metrics (over videos) and seconds per video of each tracker."""
    from jflow.metrics.tapvid import tapvid_metrics
    from jflow.tracking.tapir.kitchen_data import first_visible_queries

    per = {name: [] for name in trackers}
    times = {name: [] for name in trackers}
    used = 0
    for c in clips:
        queries, gt_tracks, gt_occ = first_visible_queries(c["tracks"], c["visible"])
        if len(queries) == 0 or np.all(queries[:, 0] >= c["video"].shape[0] - 1):
            continue  # Nothing to evaluate in this episode.
        used += 1
        h, w = c["video"].shape[1:3]
        for name, tracker in trackers.items():
            t0 = time.perf_counter()
            result = tracker.track(c["video"], queries)
            times[name].append(time.perf_counter() - t0)
            m = tapvid_metrics(
                queries, gt_occ, gt_tracks, ~result.visible, result.tracks, "first", (w, h)
            )
            per[name].append(m)
    out = {}
    for name in trackers:
        out[name] = {
            "average_jaccard": float(np.mean([m["average_jaccard"] for m in per[name]])),
            "delta_avg": float(np.mean([m["average_pts_within_thresh"] for m in per[name]])),
            "occlusion_accuracy": float(np.mean([m["occlusion_accuracy"] for m in per[name]])),
            "s_per_video": float(np.mean(times[name])),
            "videos": used,
        }
    return out


def main(cfg: KitchenTapirConfig) -> dict:
    if not cfg.fusion_emitters:
        add_xla_flag(FUSION_EMITTERS_OFF)  # Before JAX starts (jflow.runtime).
    cfg.out.mkdir(parents=True, exist_ok=True)
    train_clips = render_split(cfg, "train", range(cfg.train_seeds))
    held_out = render_split(
        cfg, "heldout", range(cfg.eval_seed_start, cfg.eval_seed_start + cfg.eval_seeds)
    )
    train_ids = {(c["task"], c["seed"]) for c in train_clips}
    if train_ids & {(c["task"], c["seed"]) for c in held_out}:
        raise SystemExit("held-out seeds overlap the training seeds")

    import jax

    from jflow.tracking.lucas_kanade import LucasKanadeTracker
    from jflow.tracking.tapir import TapirTracker, load_tapir_checkpoint
    from jflow.tracking.tapir.kitchen_data import first_visible_queries

    summary = None
    if not cfg.eval_only:
        summary = train(cfg, train_clips)
        print("training:", json.dumps(summary))
    else:
        path = cfg.out / "train_summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else None

    overrides = {
        f.name: getattr(cfg.tapir, f.name)
        for f in dataclasses.fields(TapirConfig)
        if getattr(cfg.tapir, f.name) != getattr(TapirConfig(), f.name)
    }
    _, model = load_tapir_checkpoint(cfg.out / "tapir_kitchen.npy", variant="tapir", **overrides)
    tapir = TapirTracker(model, resolution=(cfg.model_resolution, cfg.model_resolution))
    # Compile outside the per-video timings: one video per query-chunk size that occurs.
    t0 = time.perf_counter()
    warmed = set()
    seen = [c for c in train_clips if c["seed"] == 0][: cfg.eval_train_episodes]
    for c in held_out + seen:
        n = len(first_visible_queries(c["tracks"], c["visible"])[0])
        size = min(tapir.query_chunk_size, 1 << max(n - 1, 0).bit_length())
        if n and size not in warmed:
            warmed.add(size)
            tapir.track(c["video"], first_visible_queries(c["tracks"], c["visible"])[0])
    compile_s = time.perf_counter() - t0
    trackers = {"tapir": tapir, "lucas_kanade": LucasKanadeTracker(), "static": StaticTracker()}
    results = {
        "heldout": evaluate(trackers, held_out),
        "tapir_compile_s": round(compile_s, 1),
        "train": summary,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "jax_device": str(jax.devices()[0]),
    }
    if seen:
        results["train_episodes"] = evaluate(
            {"tapir": tapir, "lucas_kanade": trackers["lucas_kanade"]}, seen
        )
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    return results


def print_table(results: dict) -> None:
    for split in ("heldout", "train_episodes"):
        if split not in results:
            continue
        rows = results[split]
        n = next(iter(rows.values()))["videos"]
        print(f"\n{split} ({n} videos, TAP-Vid 'first' queries)")
        print(f"{'tracker':<14} {'AJ':>7} {'<d_avg':>7} {'OA':>7} {'s/video':>8}")
        for name, m in rows.items():
            print(
                f"{name:<14} {m['average_jaccard']:7.3f} {m['delta_avg']:7.3f} "
                f"{m['occlusion_accuracy']:7.3f} {m['s_per_video']:8.3f}"
            )


if __name__ == "__main__":
    main(tyro.cli(KitchenTapirConfig))
