"""Resources shared by every stage: the storage root and the SAR archive.

Both follow the deployment's environment: ``$SAR_PIPELINE_STORAGE`` and ``$SAR_PIPELINE_ARCHIVE``
are passed as ``dg.EnvVar`` (the Launchpad shows the variable, each run resolves it) when they are
set; unset, the settings' own defaults apply (the embedded demo under ``$SAR_PIPELINE_DATA``), so
``dg dev``, ``dg launch``, ``sar-pipeline run|demo`` and the tests need no variable at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from upath import UPath

from sar_pipeline.archive import SarArchive
from sar_pipeline.archive.plugins import ARCHIVE_VARIABLE, ArchiveSettings
from sar_pipeline.mirror import LocalMirror
from sar_pipeline.storage import (
    CACHE_VARIABLE,
    STORAGE_VARIABLE,
    StorageSettings,
    as_path,
    relative_path,
    resolve_dir,
    validate_id,
)


class StorageRoot(dg.ConfigurableResource, StorageSettings):
    """Where assets write their files: a local folder (default) or an ``s3://bucket/prefix``."""

    def root(self) -> UPath:
        return as_path(self.uri)

    def path(self, *parts: str) -> UPath:
        """``root / parts…``; each part must be a safe path component."""
        p = self.root()
        for part in parts:
            for piece in str(part).split("/"):
                p = p / validate_id(piece, "path component")
        return p

    def mirror(self) -> LocalMirror:
        """The local folder the model stages work in: the root itself, or its copy under
        ``cache_dir`` when the root is remote (``sar_pipeline.mirror``)."""
        return LocalMirror(self.uri, self.cache_dir)

    def local_path(self, *parts: str) -> Path:
        """``path(*parts)`` as a local path, for stages whose tools (transformers, diffusers,
        accelerate) read and write plain folders: under a remote root, its place in the local copy
        (:meth:`pull` it before reading, :meth:`push` it after writing)."""
        self.path(*parts)  # each part validated
        return self.mirror().local(*parts)

    def pull(self, *parts: str) -> int:
        """Download ``parts`` of a remote root into the local copy (nothing on a local root)."""
        self.path(*parts)
        return self.mirror().pull(*parts)

    def push(self, *parts: str, prune: bool = False) -> int:
        """Upload ``parts`` of the local copy to a remote root (nothing on a local root)."""
        self.path(*parts)
        return self.mirror().push(*parts, prune=prune)

    def uri_of(self, local: str | Path) -> str:
        """Where a file of the local copy lives under the storage root (metadata shows this)."""
        return self.mirror().uri(local)

    def pull_recorded(self, recorded: str | Path) -> Path:
        """The local copy of a file or folder as metadata records it (:meth:`uri_of`): under a
        remote root it is pulled first (this machine's copy may be empty); a path outside the root as
        it is (``LocalMirror.pull_recorded``)."""
        parts = self.mirror().stored_parts(recorded)
        if parts:
            self.path(*parts)  # each part validated
        return self.mirror().pull_recorded(recorded)

    def flight_path(self, flight_id: str, *parts: str) -> UPath:
        """``root/flights/<flight_id>/parts…``: where a flight partition's outputs live."""
        return self.path("flights", validate_id(flight_id, "flight id"), *parts)

    def flight_folder(self, flight_id: str, folder: str) -> UPath:
        """The current published version of a flight's output folder (``sar_tiles``, ``optical_tiles``):
        the folder itself locally, the version its pointer names on object storage."""
        return resolve_dir(self.flight_path(flight_id, folder))

    def relative(self, path: UPath) -> str:
        """``path`` relative to the root (what manifests store), with ``/`` separators."""
        return relative_path(path, self.root())


class SarArchiveResource(dg.ConfigurableResource, ArchiveSettings):
    """The SAR archive to read flights from: a STAC catalogue by default, or an installed SarArchive plug-in."""

    def get_archive(self) -> SarArchive:
        return self.load()


def from_environment(variable: str, field: str = "uri") -> dict[str, dg.EnvVar]:
    """``{field: EnvVar(variable)}`` when the deployment sets ``variable``, else nothing (the default)."""
    return {field: dg.EnvVar(variable)} if os.environ.get(variable) else {}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "storage": StorageRoot(
                **from_environment(STORAGE_VARIABLE), **from_environment(CACHE_VARIABLE, "cache_dir")
            ),
            "archive": SarArchiveResource(**from_environment(ARCHIVE_VARIABLE)),
        }
    )
