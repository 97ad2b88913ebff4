"""The ``jflow`` command: one subcommand per job, each a thin layer over importable code.

Heavy modules are imported inside each subcommand, so ``jflow --help`` is instant and each job
can choose its process-level settings (``jflow.runtime``) before JAX starts.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from jflow.data.kitchen_dataset import GenKitchenConfig
from jflow.errors import ConfigError, JflowError
from jflow.evaluation.config import EvalFlowConfig
from jflow.pipeline.evaluation import EvalKitchenConfig
from jflow.planning.plan import PlanCommand
from jflow.tracking.extract import ExtractConfig
from jflow.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Print the summary of a dataset folder's manifest."""

    path: Annotated[Path, tyro.conf.Positional]
    """The dataset folder (it holds manifest.json)."""


@dataclasses.dataclass(frozen=True)
class Extract:
    """Extract the 3D object flow of a video (.mp4) or an .npz with frames, depth and masks."""

    path: Annotated[Path, tyro.conf.Positional]
    """The input: an .mp4/.avi video or an .npz (keys in docs/extraction.md)."""
    out: Path
    """The output .npz: a FlowClip (FlowClip.to_arrays layout), or 2D tracks when there is no depth."""
    settings: Annotated[ExtractConfig, tyro.conf.OmitArgPrefixes] = ExtractConfig()
    tracker: Literal["lk", "tapir"] = "lk"
    """``lk``: pyramidal Lucas-Kanade (no weights needed); ``tapir``: TAPIR/BootsTAPIR."""
    tapir_checkpoint: Path | None = None
    """An official TAPIR or BootsTAPIR .npy checkpoint (needed with --tracker tapir)."""
    overwrite: bool = False


@dataclasses.dataclass(frozen=True)
class Demo:
    """The main job on the embedded default: dataset, brief training, episodes, report."""

    out: Path = Path("runs/demo")
    """Folder for the demo's outputs (dataset, model and compilation cache are reused)."""
    tasks: tuple[str, ...] = (
        "open_microwave",
        "open_slide_cabinet",
        "move_kettle_to_top_left_burner",
    )
    episodes_per_task: int = 6
    """Training episodes per task in the demo's dataset."""
    frames: int = 8
    resolution: int = 64
    train_steps: int = 300
    train_minutes: float = 3.0
    """Training stops after this much wall time (with a checkpoint) if the steps are not done."""
    batch_size: int = 8
    eval_episodes: int = 1
    """Episodes per task for each of ours and oracle."""
    samples: int = 2
    """Flows sampled per plan."""
    seed: int = 0
    """The first episode seed of the evaluation (and the model's sampling seed)."""
    chunk_len: int = 16
    budget: int = 600


def run_gen_kitchen(config: GenKitchenConfig) -> None:
    from jflow.data.kitchen_dataset import generate_kitchen_dataset, summarize
    from jflow.runtime import configure_rendering

    configure_rendering()
    manifest = generate_kitchen_dataset(config)
    print(f"wrote {config.out}")
    print(summarize(manifest))


def run_dataset_info(command: DatasetInfo) -> None:
    from jflow.data.kitchen_dataset import dataset_summary

    print(dataset_summary(command.path))


def run_extract(command: Extract) -> None:
    import numpy as np

    from jflow.tracking.extract import extract_from_file

    if command.out.exists() and not command.overwrite:
        raise ConfigError(f"{command.out} exists; pass --overwrite to replace it")
    if command.out.suffix != ".npz":
        raise ConfigError(f"the output must be an .npz file, got {command.out}")
    tracker = None
    if command.tracker == "tapir":
        if command.tapir_checkpoint is None:
            raise ConfigError(
                "--tracker tapir needs --tapir-checkpoint PATH (an official .npy file)"
            )
        from jflow.tracking.tapir import TapirTracker

        tracker = TapirTracker(command.tapir_checkpoint)
    result = extract_from_file(command.path, command.settings, tracker)
    command.out.parent.mkdir(parents=True, exist_ok=True)
    if result.clip is not None:
        np.savez(command.out, **result.clip.to_arrays())
        flow = result.clip.flow
        moved = np.linalg.norm(np.asarray(flow.points[-1] - flow.points[0]), axis=-1)
        vis = np.asarray(flow.visible[0] & flow.visible[-1])
        print(
            f"wrote {command.out}: 3D flow of {flow.num_points} points over {flow.num_frames} "
            f"frames ({flow.frame} frame); median motion of points visible at both ends "
            f"{np.median(moved[vis]) if vis.any() else float('nan'):.3f} m"
        )
    else:
        np.savez(
            command.out,
            tracks=np.asarray(result.tracks, np.float32),
            visible=np.asarray(result.visible, bool),
            box_xyxy=np.asarray(result.box_xyxy, np.float32),
        )
        print(
            f"wrote {command.out}: 2D tracks of {result.tracks.shape[1]} points over "
            f"{result.tracks.shape[0]} frames (the input has no depth, so no 3D flow)"
        )


def run_train(config: TrainConfig) -> None:
    from jflow.training.mesh import initialize_distributed
    from jflow.training.trainer import train

    initialize_distributed()  # Several hosts: before any JAX call (a no-op on one machine).
    summary = train(config)
    loss = summary.get("loss")
    print(
        f"trained {summary['run_dir']} to step {summary['step']}"
        + (f", loss {loss:.4f}" if loss is not None else "")
    )


def run_eval_flow(config: EvalFlowConfig) -> None:
    from jflow.evaluation.config import REPORT_FIGURE, REPORT_JSON, REPORT_MARKDOWN
    from jflow.evaluation.flow_eval import evaluate_flow

    evaluate_flow(config)
    markdown = (config.out_dir / REPORT_MARKDOWN).read_text()
    print(markdown.split("## Per task")[0].rstrip())
    written = (REPORT_JSON, REPORT_MARKDOWN, REPORT_FIGURE)
    print("wrote " + ", ".join(str(config.out_dir / name) for name in written))


def run_demo(command: Demo) -> None:
    from jflow.pipeline.demo import run_demo as demo

    demo(command)


def run_eval_kitchen(config: EvalKitchenConfig) -> None:
    from jflow.pipeline.evaluation import RESULTS_JSON, RESULTS_MARKDOWN, evaluate_kitchen

    evaluate_kitchen(config)
    print((config.out / RESULTS_MARKDOWN).read_text().split("## Failures")[0].rstrip())
    print(f"wrote {config.out / RESULTS_JSON} and {config.out / RESULTS_MARKDOWN}")


SUBCOMMANDS = {
    "gen-kitchen": GenKitchenConfig,
    "dataset-info": DatasetInfo,
    "extract": Extract,
    "train": TrainConfig,
    "eval-flow": EvalFlowConfig,
    "plan": PlanCommand,
    "eval-kitchen": EvalKitchenConfig,
    "demo": Demo,
}


def main(argv: list[str] | None = None) -> int:
    command = tyro.extras.subcommand_cli_from_dict(
        SUBCOMMANDS,
        prog="jflow",
        description="jflow: 3D object-flow world models and flow-guided robot planning.",
        args=argv,
    )
    try:
        if isinstance(command, GenKitchenConfig):
            run_gen_kitchen(command)
        elif isinstance(command, DatasetInfo):
            run_dataset_info(command)
        elif isinstance(command, Extract):
            run_extract(command)
        elif isinstance(command, TrainConfig):
            run_train(command)
        elif isinstance(command, EvalFlowConfig):
            run_eval_flow(command)
        elif isinstance(command, PlanCommand):
            from jflow.planning.plan import run_plan

            result = run_plan(command)
            if not result.ok:
                return 1
        elif isinstance(command, EvalKitchenConfig):
            run_eval_kitchen(command)
        elif isinstance(command, Demo):
            run_demo(command)
        else:  # pragma: no cover - tyro only returns the types above.
            raise TypeError(f"unhandled command {command!r}")
    except JflowError as err:
        print(f"jflow: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
