"""The storage root: a local folder or an ``s3://`` prefix, reached through universal-pathlib.

Writes are atomic: data goes to a temporary name beside the target and is renamed into place
(on object stores a single PUT is already atomic), so a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field
from upath import UPath

from sar_pipeline import paths
from sar_pipeline.errors import ConfigError
from sar_pipeline.settings import Settings

#: the environment variable the deployment sets to choose the storage root (see :class:`StorageSettings`)
STORAGE_VARIABLE = "SAR_PIPELINE_STORAGE"


class StorageSettings(Settings):
    """Where assets write their files."""

    uri: str = Field(
        default_factory=lambda: str(paths.storage_dir()),
        description="Local folder or fsspec URI (s3://bucket/prefix) under which every asset writes. "
        "Definitions read it from $SAR_PIPELINE_STORAGE when that is set; else <data>/storage "
        "($SAR_PIPELINE_DATA, default ./data). The model stages need a local or mounted folder.",
    )


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as one path component (no ``/``, no ``..``), else raise."""
    if not isinstance(value, str) or not _SAFE_ID.match(value) or ".." in value:
        raise ConfigError(
            repr(value),
            f"not a valid {what}: use letters, digits, '.', '_' and '-' (no '/', no '..', "
            "at most 200 characters, starting with a letter or digit)",
        )
    return value


def as_path(uri: str | os.PathLike) -> UPath:
    """A ``UPath`` for a local path or an fsspec URI (``s3://bucket/prefix``)."""
    return UPath(uri)


def is_local(path: UPath | Path) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def local_str(path: UPath | Path) -> str:
    """A path string GDAL/rasterio can open: local path, or ``s3://`` (rasterio maps it to /vsis3/)."""
    if is_local(path):
        return str(Path(path.path if isinstance(path, UPath) else path))
    return str(path)


def atomic_write_bytes(path: UPath | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all."""
    with atomic_local_file(path) as tmp:
        Path(tmp).write_bytes(data)


@contextlib.contextmanager
def atomic_local_file(path: UPath | Path, suffix: str = "") -> Iterator[str]:
    """Yield a local file name to write; on success it becomes ``path`` in one step.

    Local targets get a temporary name in the same folder and ``os.replace``; remote targets
    are written locally and uploaded with one PUT. On error nothing is left at ``path``.
    """
    path = UPath(path)
    if is_local(path):
        target = Path(path.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
        try:
            yield str(tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    else:
        with tempfile.TemporaryDirectory() as d:
            tmp = os.path.join(d, path.name)
            yield tmp
            path.parent.mkdir(parents=True, exist_ok=True)
            path.fs.put_file(tmp, path.path)


@contextlib.contextmanager
def atomic_local_dir(path: UPath | Path) -> Iterator[Path]:
    """Yield a local folder to fill; on success it replaces ``path`` as a whole.

    Used for checkpoints and multi-file outputs: a folder that exists under its final name is
    complete. Remote targets are uploaded file by file, then a ``_COMPLETE`` marker is written last.
    """
    path = UPath(path)
    if is_local(path):
        target = Path(path.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            yield tmp
            if target.exists():
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    else:
        with tempfile.TemporaryDirectory() as d:
            yield Path(d)
            path.fs.put(d.rstrip("/") + "/", path.path, recursive=True)
            (path / "_COMPLETE").write_text("")
