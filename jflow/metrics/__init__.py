"""Evaluation metrics: TAP-Vid point-tracking metrics and 3D flow errors."""

from jflow.metrics.flow3d import FlowErrors, flow_errors
from jflow.metrics.tapvid import (
    TAPVID_THRESHOLDS,
    evaluation_frames,
    sample_queries_first,
    sample_queries_strided,
    tapvid_metrics,
)

__all__ = [
    "TAPVID_THRESHOLDS",
    "FlowErrors",
    "evaluation_frames",
    "flow_errors",
    "sample_queries_first",
    "sample_queries_strided",
    "tapvid_metrics",
]
