"""Errors that name the input at fault and the reason, so a user can fix it."""

from __future__ import annotations


class SarPipelineError(Exception):
    """Bad input: ``source`` names the file, item or option at fault, ``reason`` says why."""

    def __init__(self, source: object, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class ArchiveError(SarPipelineError):
    """A catalogue, flight or scene that cannot be read as a SAR archive."""


class RasterError(SarPipelineError):
    """A raster that cannot be used: no CRS, non-invertible transform, corrupt file, all nodata…"""


class ConfigError(SarPipelineError):
    """A configuration value that is unknown, missing or contradictory."""


class ModelError(SarPipelineError):
    """A model path that is missing, incomplete or not the expected kind of checkpoint."""
