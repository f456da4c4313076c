"""What a dataset operation raises when it cannot be done; the message says why and what to do."""

from __future__ import annotations

from bus_schemas.errors import TidzamError


class DatasetError(TidzamError, ValueError):
    """A dataset operation that cannot be done; the message says why and what to do."""


class DatasetNotFound(DatasetError):
    """No dataset file where one was named."""


class DatasetExists(DatasetError):
    """A dataset would overwrite another one."""


class ClassNameError(DatasetError):
    """A class name that is not usable, unknown, or already taken."""


class IncompatibleDatasets(DatasetError):
    """Two datasets whose windows cannot be mixed (different feature parameters)."""


class BadInput(DatasetError):
    """A folder with nothing in it, a proportion out of range, a bad argument."""
