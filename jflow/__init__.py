"""jflow: 3D object-flow world models from action-free video, and flow-guided action planning."""

from jflow.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GeometryError,
    JflowError,
    OutputError,
    ShapeError,
    SimulationError,
    TrainingError,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "GeometryError",
    "JflowError",
    "OutputError",
    "ShapeError",
    "SimulationError",
    "TrainingError",
    "UnknownNameError",
    "__version__",
]
