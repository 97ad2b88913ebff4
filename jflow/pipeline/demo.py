"""``jflow demo`` (what ``make demo`` runs): the whole system on the embedded default.

1. **Dataset**: a small kitchen dataset (3 tasks, human-style videos with ground-truth flow) in
   ``OUT/kitchen``; an earlier demo's dataset with the same settings is reused.
2. **Model**: the default flow diffuser trained briefly on it (``train_steps`` steps or
   ``train_minutes``, whichever ends first) in ``OUT/model``, by ``jflow train`` in a child
   process with XLA's default CPU settings (with planning's, the train step took 4 times longer
   to compile); a run that an earlier demo finished
   with the same settings and data is reused (the demo says so). A finished run is marked by
   ``OUT/model/demo_model.json``.
3. **Episodes**: ``jflow eval-kitchen`` with ``ours`` and ``oracle`` on the three tasks,
   ``eval_episodes`` episode(s) each, into ``OUT/report``.
4. **Report** in ``OUT/report``: ``results.md``/``results.json`` (the success table),
   ``flow_<task>.png`` (the model's predicted flow against the ground truth on the first view of
   the task's first ``ours`` episode), ``videos/rollout_<method>_<task>_<seed>.mp4`` and an index
   ``README.md`` linking them.

JAX's persistent compilation cache lives in ``OUT/.jax_cache``. The demo's own process keeps
XLA's default CPU settings: the planner's functions compile with their own
(:func:`jflow.runtime.planning_jit`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jflow.errors import JflowError

MODEL_MARKER = "demo_model.json"


def same_demo_dataset(manifest: dict, config) -> bool:
    """Whether a dataset manifest is the demo's dataset for ``config`` (GenKitchenConfig)."""
    return (
        manifest.get("kind") == "jflow.kitchen"
        and [t["task_id"] for t in manifest.get("tasks", [])] == list(config.tasks)
        and manifest.get("frames") == config.frames
        and manifest.get("resolution") == config.resolution
        and sum(manifest.get("counts", {}).values()) == config.episodes_per_task * len(config.tasks)
    )


def prepare_dataset(command, say) -> tuple[Path, dict, bool]:
    """Generate the demo's dataset, or reuse it: ``(folder, manifest, reused)``."""
    from jflow.data.kitchen_dataset import GenKitchenConfig, generate_kitchen_dataset
    from jflow.data.shards import read_manifest

    dataset_dir = command.out / "kitchen"
    config = GenKitchenConfig(
        out=dataset_dir,
        tasks=command.tasks,
        episodes_per_task=command.episodes_per_task,
        frames=command.frames,
        resolution=command.resolution,
        num_shards=2,
        overwrite=True,
    )
    existing = None
    if (dataset_dir / "manifest.json").is_file():
        try:
            existing = read_manifest(dataset_dir)
        except JflowError:
            existing = None
    if existing is not None and same_demo_dataset(existing, config):
        say(f"reusing the demo dataset in {dataset_dir} (delete it to regenerate)")
        return dataset_dir, existing, True
    if dataset_dir.exists() and any(dataset_dir.iterdir()) and existing is None:
        raise JflowError(
            f"{dataset_dir} holds files that are not a jflow demo dataset; "
            "move them or choose another --out"
        )
    manifest = generate_kitchen_dataset(config)
    say(f"wrote the demo dataset {dataset_dir}")
    return dataset_dir, manifest, False


def _training_command(config) -> list[str]:
    """``jflow train`` arguments for a TrainConfig."""
    return [
        sys.executable, "-m", "jflow.cli", "train",
        "--data", str(config.data), "--out", str(config.out), "--model", config.model,
        "--steps", str(config.steps), "--batch-size", str(config.batch_size),
        "--learning-rate", str(config.learning_rate),
        "--warmup-steps", str(config.warmup_steps),
        "--max-minutes", str(config.max_minutes),
        "--checkpoint-every", str(config.checkpoint_every),
        "--log-every", str(config.log_every),
        "--seed", str(config.seed),
    ]  # fmt: skip


def _training_environment(cache: Path) -> dict[str, str]:
    """The child's environment: XLA's default CPU fusion (the train step compiles several times
    faster with it than with planning's setting) and the demo's compilation cache."""
    from jflow.runtime import FUSION_EMITTERS_OFF

    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if f != FUSION_EMITTERS_OFF]
    env["XLA_FLAGS"] = " ".join(flags)
    if not env.get("JAX_COMPILATION_CACHE_DIR"):
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache.resolve())
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"
    return env


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "logs" / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    steps = [int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    return {"step": max(steps), **{k: v for k, v in last.items() if k != "step"}}


def prepare_model(command, dataset_dir: Path, manifest: dict, say):
    """Train the demo's model (``jflow train`` in a child process), or reuse a finished one:
    ``(run folder, summary, reused)``."""
    from jflow.training.config import TrainConfig

    run_dir = command.out / "model"
    config = TrainConfig(
        data=dataset_dir,
        out=run_dir,
        model="default",
        steps=command.train_steps,
        batch_size=command.batch_size,
        warmup_steps=min(50, max(1, command.train_steps // 5)),
        max_minutes=command.train_minutes,
        checkpoint_every=command.train_steps,
        log_every=10,
    )
    wanted = {
        "train": config.to_dict(),
        "dataset_normalization": manifest["normalization"],
        "dataset_records": manifest["num_records"],
    }
    marker = run_dir / MODEL_MARKER
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if {k: saved.get(k) for k in wanted} == wanted:
            summary = saved["summary"]
            say(
                f"reusing the demo model in {run_dir} (trained to step {summary['step']} by an "
                "earlier demo; delete the folder to train again)"
            )
            return run_dir, summary, True
        say(f"the demo model in {run_dir} was trained with other settings: training again")
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    done = subprocess.run(
        _training_command(config), env=_training_environment(command.out / ".jax_cache")
    )
    if done.returncode != 0:
        raise JflowError(f"training the demo model failed (jflow train exited {done.returncode})")
    summary = _last_metrics(run_dir)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    marker.write_text(json.dumps({**wanted, "summary": summary}, indent=2) + "\n")
    loss = f" (loss {summary['loss']:.3f})" if "loss" in summary else ""
    say(
        f"trained the demo model {run_dir} to step {summary['step']} in "
        f"{summary['seconds']:.0f} s{loss}"
    )
    return run_dir, summary, False


def use_compilation_cache(folder: Path) -> None:
    """Keep JAX's persistent compilation cache in ``folder`` unless the user chose one."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder.resolve()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_demo(command) -> dict[str, Any]:
    """The demo (module docs); ``command`` is :class:`jflow.cli.Demo`. Returns a summary."""
    use_compilation_cache(command.out / ".jax_cache")
    from tqdm.auto import tqdm

    from jflow.models.text_encoder import TextEncoder
    from jflow.pipeline.evaluation import RESULTS_MARKDOWN, EvalKitchenConfig, evaluate_kitchen
    from jflow.pipeline.methods import Oracle
    from jflow.pipeline.predictor import FlowPredictor
    from jflow.pipeline.report import draw_flow_comparison, write_index, write_png

    started = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    stages = tqdm(total=4, desc="demo", unit="stage", position=0)

    def say(text: str) -> None:
        notes.append(text)
        stages.write(text)

    try:
        stages.set_postfix_str("dataset")
        t0 = time.perf_counter()
        dataset_dir, manifest, _ = prepare_dataset(command, say)
        timings["dataset"] = time.perf_counter() - t0
        stages.update(1)

        stages.set_postfix_str("model")
        t0 = time.perf_counter()
        run_dir, train_summary, _ = prepare_model(command, dataset_dir, manifest, say)
        text = TextEncoder()
        timings["model"] = time.perf_counter() - t0
        stages.update(1)

        stages.set_postfix_str("episodes")
        t0 = time.perf_counter()
        report_dir = command.out / "report"
        if report_dir.exists():
            shutil.rmtree(report_dir)
        predictor = FlowPredictor(
            run_dir, samples=command.samples, seed=command.seed, text_encoder=text
        )
        pictures: dict[str, str] = {}

        def keep_picture(outcome) -> None:
            agent = outcome.agent
            task_id = agent.task.task_id
            if agent.method.name != "ours" or task_id in pictures:
                return
            event = next((e for e in agent.events if e.flows), None)
            if event is None or agent.first_observation is None:
                return
            oracle = Oracle(frames=predictor.frames)
            oracle.start_episode(agent.env, task_id, agent.seed, agent.observer)
            truth = oracle.flows_for(
                agent.first_observation, agent.instruction, outcome.rollout.states[0]
            )[0]
            image = draw_flow_comparison(
                agent.first_observation.rgb,
                event.flows[0],
                truth,
                caption=f'"{agent.instruction}" (seed {agent.seed})',
            )
            name = f"flow_{task_id}.png"
            write_png(image, report_dir / name)
            pictures[task_id] = name

        eval_config = EvalKitchenConfig(
            out=report_dir,
            tasks=command.tasks,
            methods=("ours", "oracle"),
            episodes=command.eval_episodes,
            first_seed=command.seed,
            model_run=run_dir,
            samples=command.samples,
            chunk_len=command.chunk_len,
            budget=command.budget,
            videos=command.eval_episodes,
        )
        report = evaluate_kitchen(eval_config, predictor=predictor, on_episode=keep_picture)
        timings["episodes"] = time.perf_counter() - t0
        stages.update(1)

        stages.set_postfix_str("report")
        videos = {
            f"{r['method']} on {r['task_id']} (seed {r['seed']}, "
            f"{'success' if r['success'] else 'failure'})": r["video"]
            for r in report["episodes"]
            if "video" in r
        }
        total = time.perf_counter() - started
        notes.append(
            "wall time: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
            + f"; total {total:.0f} s"
        )
        index = write_index(
            report_dir,
            (report_dir / RESULTS_MARKDOWN).read_text(),
            pictures,
            videos,
            notes,
        )
        stages.update(1)
    finally:
        stages.close()
    print((report_dir / RESULTS_MARKDOWN).read_text().split("## Failures")[0].rstrip())
    print(f"report: {index} ({len(pictures)} flow pictures, {len(videos)} videos)")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return {
        "report": str(index),
        "timings": timings,
        "train": train_summary,
        "summary": report["summary"],
        "pictures": pictures,
        "videos": videos,
    }


__all__ = ["MODEL_MARKER", "prepare_dataset", "prepare_model", "run_demo", "same_demo_dataset"]
