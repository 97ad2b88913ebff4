"""The exceptions jflow raises.

Every error a user can cause derives from :class:`JflowError`, so ``except JflowError``
catches all of them. Each subclass also derives from the built-in exception a Python user
would expect (``ValueError`` for a bad argument, ``OSError`` for a file problem), so code
written against the standard exceptions keeps working.
"""

from __future__ import annotations

import math


class JflowError(Exception):
    """Base class of every error jflow raises on purpose."""


class ConfigError(JflowError, ValueError):
    """An argument or configuration value is invalid (wrong range, shape or name)."""


def require_positive(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number > 0, else a :class:`ConfigError` naming
    ``name`` and the value."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value}")
    return value


class UnknownNameError(ConfigError, KeyError):
    """A name (task, camera, object, method) is not one jflow knows.

    The message lists the names that are known.
    """

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind = kind
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message.
        return str(self.args[0])


class ShapeError(ConfigError):
    """An array has the wrong shape, dtype or layout."""


class GeometryError(JflowError, ValueError):
    """A geometric computation is ill-posed (degenerate points, points behind the camera)."""


class DataError(JflowError, OSError):
    """A data file or dataset is missing, truncated, corrupt or inconsistent."""


class CheckpointError(JflowError, ValueError):
    """A checkpoint does not fit: another architecture, missing or mis-shaped tensors."""


class TrainingError(JflowError, RuntimeError):
    """Training cannot go on (a non-finite loss or gradient, with the step that caused it)."""


class OutputError(JflowError, OSError):
    """An output location cannot be written, or writing would destroy a user's files."""


class SimulationError(JflowError, RuntimeError):
    """The simulated world could not be built, stepped or rendered."""
