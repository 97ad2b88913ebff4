"""Flow records: the ObjectFlow pytree, the FlowClip record, grid layout and normalisation."""

from jflow.flow.grid import (
    DEFAULT_GRID,
    GRID_CHANNELS,
    flow_to_grid,
    grid_order,
    grid_queries_in_box,
    grid_to_flow,
    resample_points,
    to_grid_order,
)
from jflow.flow.normalization import FlowStats, denormalize_grid, normalize_grid
from jflow.flow.records import FlowClip, ObjectFlow

__all__ = [
    "DEFAULT_GRID",
    "GRID_CHANNELS",
    "FlowClip",
    "FlowStats",
    "ObjectFlow",
    "denormalize_grid",
    "flow_to_grid",
    "grid_order",
    "grid_queries_in_box",
    "grid_to_flow",
    "normalize_grid",
    "resample_points",
    "to_grid_order",
]
