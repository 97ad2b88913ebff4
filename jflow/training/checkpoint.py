"""Checkpoints with orbax: parameters, optimizer state, EMA, the grain iterator and the config.

A run folder holds ``checkpoints/<step>/`` with three items:

- ``state``: the pytree ``{"params", "opt_state", "ema"}`` (orbax ``StandardSave``; restored
  directly into the shardings of the current mesh, so a run can resume on another mesh);
- ``data``: the grain iterator's state, so the resumed run reads the same batches;
- ``meta``: JSON with the step, the model config and the training config.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed mid-save (even with SIGKILL) resumes from the last complete checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from jflow.errors import CheckpointError


class Checkpointer:
    """Saves and restores training checkpoints under ``<run>/checkpoints``."""

    def __init__(self, run_dir: str | os.PathLike, *, max_to_keep: int = 3):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        for args in (ocp.args.StandardSave, ocp.args.StandardRestore):
            registry.add("state", args, ocp.StandardCheckpointHandler)
        for args in (grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore):
            registry.add("data", args, grain.checkpoint.CheckpointHandler)
        for args in (ocp.args.JsonSave, ocp.args.JsonRestore):
            registry.add("meta", args, ocp.JsonCheckpointHandler)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            handler_registry=registry,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iterator, meta: dict[str, Any]) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                meta=ocp.args.JsonSave({"step": int(step), **meta}),
            ),
        )

    def read_meta(self, step: int) -> dict[str, Any]:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore(self, step: int, state_template: dict, data_iterator=None) -> dict:
        """Restore ``state`` shaped and sharded like ``state_template``, and the iterator
        (when one is given: a model loaded for sampling needs none).

        Raises :class:`CheckpointError` listing every tensor whose shape differs, and every
        missing or unexpected one, when the checkpoint comes from another architecture.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        self._check_structure(step, abstract)
        items = {"state": ocp.args.StandardRestore(abstract)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def _check_structure(self, step: int, abstract: dict) -> None:
        metadata = self.manager.item_metadata(step)
        saved = metadata["state"] if metadata is not None else None
        if saved is None:
            return
        saved_tree = getattr(saved, "tree", saved)
        saved_flat = _flatten_shapes(saved_tree)
        want_flat = _flatten_shapes(abstract)
        problems = []
        for key in sorted(set(want_flat) - set(saved_flat)):
            problems.append(f"missing in checkpoint: {key} {want_flat[key]}")
        for key in sorted(set(saved_flat) - set(want_flat)):
            problems.append(f"unexpected in checkpoint: {key} {saved_flat[key]}")
        for key in sorted(set(saved_flat) & set(want_flat)):
            if saved_flat[key] != want_flat[key]:
                problems.append(
                    f"shape mismatch: {key} checkpoint {saved_flat[key]} vs model {want_flat[key]}"
                )
        if problems:
            shown = "\n  ".join(problems[:40])
            more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} does not fit this model "
                f"({len(problems)} differences):\n  {shown}{more}"
            )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _flatten_shapes(tree) -> dict[str, tuple]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in flat:
        key = "/".join(_key_name(p) for p in path)
        shape = getattr(leaf, "shape", None)
        out[key] = tuple(shape) if shape is not None else ()
    return out


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)
