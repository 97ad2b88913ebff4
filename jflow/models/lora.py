"""LoRA (low-rank adaptation) of the attention projections, for few-shot fine-tuning.

:func:`apply_lora` wraps the ``to_q / to_k / to_v / to_out`` ``nnx.Linear`` layers of the
model's attention modules in :class:`LoRALinear`: ``y = x W + b + (alpha / rank) * x A B``
with ``A [in, rank]`` random and ``B [rank, out]`` zero, so the wrapped model computes exactly
what it did before. ``A`` and ``B`` are ``nnx.LoRAParam`` (a subclass of ``nnx.Param``), so

- ``nnx.Optimizer(model, tx, wrt=LORA_FILTER)`` / ``nnx.grad(..., argnums=nnx.DiffState(0,
  LORA_FILTER))`` train only the LoRA weights (base frozen), and
- :func:`finetune_filter` ``(motion=True)`` also trains the motion modules, the recipe of
  3DFlowAction (motion modules trained, LoRA in the spatial network).

:func:`merge_lora` folds ``(alpha / rank) A B`` into the base kernels (no extra cost at
inference), :func:`unmerge_lora` takes it out again; :func:`remove_lora` drops the adapters.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jflow.errors import ConfigError
from jflow.models.attention import Attention
from jflow.models.init import variance_scaling, zeros

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out")
LORA_FILTER = nnx.LoRAParam
"""Filter for the LoRA weights (``nnx.state(model, LORA_FILTER)``, optimizer ``wrt=``)."""


class LoRALinear(nnx.Module):
    """A frozen-base ``nnx.Linear`` plus a rank-``r`` update ``(alpha / r) x A B``."""

    def __init__(self, base: nnx.Linear, rank: int, alpha: float, *, rngs: nnx.Rngs):
        in_f, out_f = base.kernel.shape
        self.base = base
        self.rank = rank
        self.scale = float(alpha) / rank
        self.lora_a = nnx.LoRAParam(variance_scaling(1.0, "in")(rngs.params(), (in_f, rank)))
        self.lora_b = nnx.LoRAParam(zeros(None, (rank, out_f)))
        self.merged = False

    def delta(self) -> jax.Array:
        return self.scale * (self.lora_a[...] @ self.lora_b[...])

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scale * ((x @ self.lora_a[...]) @ self.lora_b[...])


def _attention_modules(model: nnx.Module, include_motion: bool) -> list[tuple[tuple, Attention]]:
    found = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, Attention):
            if not include_motion and any(str(p) == "motion" for p in path):
                continue
            found.append((path, node))
    return found


def apply_lora(
    model: nnx.Module,
    rank: int = 4,
    alpha: float | None = None,
    targets: Sequence[str] = LORA_TARGETS,
    *,
    include_motion: bool = False,
    rngs: nnx.Rngs | None = None,
) -> int:
    """Wrap the ``targets`` projections of every attention module in :class:`LoRALinear`.

    ``alpha`` defaults to ``rank`` (scale 1). Motion-module attention is left alone unless
    ``include_motion`` (they are trained in full in the paper's recipe). In place; returns the
    number of wrapped layers. Already wrapped layers are skipped.
    """
    if rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
    bad = [t for t in targets if t not in LORA_TARGETS]
    if bad or not targets:
        raise ConfigError(f"LoRA targets must be among {LORA_TARGETS}, got {tuple(targets)}")
    alpha = float(rank if alpha is None else alpha)
    rngs = rngs or nnx.Rngs(params=0)
    count = 0
    for _, attn in _attention_modules(model, include_motion):
        for name in targets:
            layer = getattr(attn, name)
            if isinstance(layer, LoRALinear):
                continue
            setattr(attn, name, LoRALinear(layer, rank, alpha, rngs=rngs))
            count += 1
    if count == 0:
        raise ConfigError("apply_lora found no attention projections to wrap")
    return count


def lora_layers(model: nnx.Module) -> list[LoRALinear]:
    return [node for _, node in nnx.iter_graph(model) if isinstance(node, LoRALinear)]


def merge_lora(model: nnx.Module) -> None:
    """Fold each LoRA update into its base kernel (in place; the adapters are kept)."""
    for layer in lora_layers(model):
        if not layer.merged:
            layer.base.kernel[...] = layer.base.kernel[...] + layer.delta()
            layer.merged = True


def unmerge_lora(model: nnx.Module) -> None:
    """Undo :func:`merge_lora` (subtract the same update)."""
    for layer in lora_layers(model):
        if layer.merged:
            layer.base.kernel[...] = layer.base.kernel[...] - layer.delta()
            layer.merged = False


def remove_lora(model: nnx.Module, merge: bool = True) -> None:
    """Replace every :class:`LoRALinear` by its base layer, merged into it first if ``merge``."""
    if merge:
        merge_lora(model)
    else:
        unmerge_lora(model)
    for _, attn in _attention_modules(model, include_motion=True):
        for name in LORA_TARGETS:
            layer = getattr(attn, name)
            if isinstance(layer, LoRALinear):
                setattr(attn, name, layer.base)


def finetune_filter(motion: bool = False):
    """The parameters to train when fine-tuning: LoRA weights, plus the motion modules'
    parameters if ``motion``."""
    if not motion:
        return LORA_FILTER
    return nnx.Any(LORA_FILTER, nnx.All(nnx.Param, nnx.PathContains("motion")))


def lora_param_count(model: nnx.Module) -> int:
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(nnx.state(model, LORA_FILTER)))
