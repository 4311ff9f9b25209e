"""SAR archives: the :class:`SarArchive` protocol, its STAC implementation and the demo simulator."""

from __future__ import annotations

import importlib
from typing import Any

from sar_pipeline.archive.protocol import FlightRecord, SarArchive, SceneRecord
from sar_pipeline.errors import ConfigError

DEFAULT_ARCHIVE_CLASS = "sar_pipeline.archive.stac:StacSarArchive"


def load_archive(uri: str, archive_class: str = DEFAULT_ARCHIVE_CLASS, **options: Any) -> SarArchive:
    """Build the archive named by ``archive_class`` (``"package.module:Class"``) on ``uri``."""
    module_name, _, class_name = archive_class.partition(":")
    if not class_name:
        raise ConfigError(archive_class, "archive_class must look like 'package.module:ClassName'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(archive_class, f"cannot import the archive class ({exc})") from exc
    archive = cls(uri, **options)
    if not isinstance(archive, SarArchive):
        raise ConfigError(
            archive_class, "does not implement SarArchive (list_flights, list_scenes, open_scene)"
        )
    return archive


__all__ = ["FlightRecord", "SarArchive", "SceneRecord", "load_archive", "DEFAULT_ARCHIVE_CLASS"]
