"""SAR archives: the :class:`SarArchive` protocol, its STAC implementation and the demo simulator."""

from __future__ import annotations

from sar_pipeline.archive.plugins import (
    DEFAULT_ARCHIVE_CLASS,
    ENTRY_POINT_GROUP,
    ArchiveSettings,
    load_archive,
)
from sar_pipeline.archive.protocol import FlightRecord, SarArchive, SceneRecord

__all__ = [
    "ArchiveSettings",
    "DEFAULT_ARCHIVE_CLASS",
    "ENTRY_POINT_GROUP",
    "FlightRecord",
    "SarArchive",
    "SceneRecord",
    "load_archive",
]
