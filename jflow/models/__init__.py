"""The flow world model: an AnimateDiff-style UNet that generates 3D object flow.

Given the first RGB-D frame, a language instruction and the object's initial points (frame 0
of the grid-layout flow), :class:`FlowUNet` denoises (or transports) a normalised flow
``[B, T, h, w, 4]``; :func:`loss_fn` trains it (DDPM epsilon / v prediction or flow
matching) and :func:`sample` generates flows. See docs/model.md.
"""

from jflow.models.conditioning import Conditioning, EncodedCondition, conditioning_from_batch
from jflow.models.config import (
    OBJECTIVES,
    SAMPLERS,
    SCHEDULES,
    FlowModelConfig,
    ObjectiveConfig,
    config_diff,
)
from jflow.models.lora import (
    LORA_FILTER,
    LORA_TARGETS,
    LoRALinear,
    apply_lora,
    finetune_filter,
    lora_param_count,
    merge_lora,
    remove_lora,
    unmerge_lora,
)
from jflow.models.objectives import (
    BATCH_TENSOR_KEYS,
    alphas_cumprod,
    batch_tensors,
    conditioning_from_tensors,
    loss_fn,
)
from jflow.models.samplers import FAST_COMPILE, cfg_combine, ddim_loop, flow_loop, sample
from jflow.models.text_encoder import TextEncoder
from jflow.models.unet import FlowUNet, count_params

__all__ = [
    "BATCH_TENSOR_KEYS",
    "batch_tensors",
    "FAST_COMPILE",
    "LORA_FILTER",
    "LORA_TARGETS",
    "OBJECTIVES",
    "SAMPLERS",
    "SCHEDULES",
    "Conditioning",
    "EncodedCondition",
    "FlowModelConfig",
    "FlowUNet",
    "LoRALinear",
    "ObjectiveConfig",
    "TextEncoder",
    "alphas_cumprod",
    "apply_lora",
    "cfg_combine",
    "conditioning_from_batch",
    "conditioning_from_tensors",
    "config_diff",
    "count_params",
    "ddim_loop",
    "finetune_filter",
    "flow_loop",
    "lora_param_count",
    "loss_fn",
    "merge_lora",
    "remove_lora",
    "sample",
    "unmerge_lora",
]
