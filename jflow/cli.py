"""The ``jflow`` command: one subcommand per job, each a thin layer over importable code.

Heavy modules are imported inside each subcommand, so ``jflow --help`` is instant and each job
can choose its process-level settings (``jflow.runtime``) before JAX starts.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro

from jflow.data.kitchen_dataset import GenKitchenConfig
from jflow.errors import JflowError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Print the summary of a dataset folder's manifest."""

    path: Annotated[Path, tyro.conf.Positional]
    """The dataset folder (it holds manifest.json)."""


@dataclasses.dataclass(frozen=True)
class Demo:
    """The main job on the embedded default: today, a small kitchen dataset and its summary."""

    out: Path = Path("runs/demo")
    """Folder for the demo's outputs (reused across runs)."""
    tasks: tuple[str, ...] = ("microwave_open", "slide_cabinet_open", "kettle_to_top_left_burner")
    episodes_per_task: int = 2
    frames: int = 8
    resolution: int = 64


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


def run_demo(command: Demo) -> None:
    from jflow.data.kitchen_dataset import generate_kitchen_dataset, summarize
    from jflow.data.shards import read_manifest
    from jflow.runtime import configure_rendering

    configure_rendering()
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
    if existing is not None and _same_demo_dataset(existing, config):
        print(f"reusing the demo dataset in {dataset_dir} (delete it to regenerate)")
        manifest = existing
    else:
        if dataset_dir.exists() and any(dataset_dir.iterdir()) and existing is None:
            raise JflowError(
                f"{dataset_dir} holds files that are not a jflow demo dataset; "
                "move them or choose another --out"
            )
        manifest = generate_kitchen_dataset(config)
        print(f"wrote {dataset_dir}")
    print(summarize(manifest))


def _same_demo_dataset(manifest: dict, config: GenKitchenConfig) -> bool:
    return (
        manifest.get("kind") == "jflow.kitchen"
        and [t["task_id"] for t in manifest.get("tasks", [])] == list(config.tasks)
        and manifest.get("frames") == config.frames
        and manifest.get("resolution") == config.resolution
        and sum(manifest.get("counts", {}).values()) == config.episodes_per_task * len(config.tasks)
    )


SUBCOMMANDS = {
    "gen-kitchen": GenKitchenConfig,
    "dataset-info": DatasetInfo,
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
