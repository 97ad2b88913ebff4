"""TAPIR, BootsTAPIR and causal (online) TAPIR point trackers in Flax NNX.

A reimplementation of the TAPIR family (Doersch et al., 2023; BootsTAPIR, 2024) that
loads the official Haiku checkpoints; see docs/tapir.md.

>>> variant, model = load_tapir_checkpoint("bootstapir_checkpoint_v2.npy")  # doctest: +SKIP
>>> result = TapirTracker(model).track(video, queries)  # doctest: +SKIP
"""

from jflow.tracking.tapir.checkpoint import (
    expected_layout,
    infer_variant,
    init_tapir,
    load_tapir_checkpoint,
    model_to_haiku_params,
    save_tapir_checkpoint,
)
from jflow.tracking.tapir.config import VARIANTS, TapirConfig, variant_config
from jflow.tracking.tapir.losses import tapir_loss, tapnet_loss
from jflow.tracking.tapir.model import TAPIR, preprocess_frames, visibility
from jflow.tracking.tapir.tracker import TapirTracker
from jflow.tracking.tapir.train import (
    FREEZE_BACKBONE,
    batch_from_tracks,
    make_eval_loss,
    make_optimizer,
    make_train_step,
)

__all__ = [
    "FREEZE_BACKBONE",
    "TAPIR",
    "VARIANTS",
    "TapirConfig",
    "TapirTracker",
    "batch_from_tracks",
    "expected_layout",
    "infer_variant",
    "init_tapir",
    "load_tapir_checkpoint",
    "make_eval_loss",
    "make_optimizer",
    "make_train_step",
    "model_to_haiku_params",
    "preprocess_frames",
    "save_tapir_checkpoint",
    "tapir_loss",
    "tapnet_loss",
    "variant_config",
    "visibility",
]
