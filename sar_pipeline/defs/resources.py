"""Resources shared by every stage: the storage root and the SAR archive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from sar_pipeline import paths
from sar_pipeline.archive import DEFAULT_ARCHIVE_CLASS, SarArchive, load_archive
from sar_pipeline.errors import ConfigError
from sar_pipeline.storage import as_path, is_local, local_str, validate_id


class StorageRoot(dg.ConfigurableResource):
    """Where assets write their files: a local folder (default) or an ``s3://bucket/prefix``."""

    uri: str = Field(
        default_factory=lambda: os.environ.get("SAR_PIPELINE_STORAGE", str(paths.storage_dir())),
        description="Local folder or fsspec URI (s3://bucket/prefix) under which assets write "
        "(default: $SAR_PIPELINE_STORAGE, else <data>/storage).",
    )

    def root(self) -> UPath:
        return as_path(self.uri)

    def path(self, *parts: str) -> UPath:
        """``root / parts…``; each part must be a safe path component."""
        p = self.root()
        for part in parts:
            for piece in str(part).split("/"):
                p = p / validate_id(piece, "path component")
        return p

    def local_path(self, *parts: str) -> Path:
        """``path(*parts)`` as a local filesystem path, for stages whose tools (transformers,
        diffusers, accelerate) read and write plain folders; a remote root is refused clearly."""
        p = self.path(*parts)
        if not is_local(p):
            raise ConfigError(
                f"storage.uri={self.uri}",
                "the model stages (BLIP fine-tuning, latent cache, diffusion training) need a local or "
                "mounted storage root (e.g. an s3 bucket mounted with mountpoint-s3 or s3fs-fuse)",
            )
        return Path(local_str(p))

    def flight_path(self, flight_id: str, *parts: str) -> UPath:
        """``root/flights/<flight_id>/parts…``: where a flight partition's outputs live."""
        return self.path("flights", validate_id(flight_id, "flight id"), *parts)


class SarArchiveResource(dg.ConfigurableResource):
    """The SAR archive to read flights from: a STAC catalogue by default, or any SarArchive class."""

    uri: str = Field(
        default_factory=lambda: os.environ.get(
            "SAR_PIPELINE_ARCHIVE", str(paths.demo_archive_dir() / "catalog.json")
        ),
        description="Root catalog.json of the STAC archive (local path or s3://…), or what your class "
        "takes (default: $SAR_PIPELINE_ARCHIVE, else the demo archive).",
    )
    archive_class: str = Field(
        default=DEFAULT_ARCHIVE_CLASS,
        description="Name of an installed SarArchive plug-in: an entry point of group "
        "'sar_pipeline.archives' ('stac' = the STAC archive; your package registers its own class). "
        "Anything else is refused.",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the class.")

    def get_archive(self) -> SarArchive:
        return load_archive(self.uri, self.archive_class, **self.options)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources={"storage": StorageRoot(), "archive": SarArchiveResource()})
