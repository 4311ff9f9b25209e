"""Which :class:`~sar_pipeline.archive.protocol.SarArchive` class reads the archive: installed plug-ins only.

An archive class is named in run config (the ``archive`` resource's ``archive_class``), so the
name must never be able to reach arbitrary code: ``"os:system"`` with a shell command as ``uri``
would otherwise run the command. Only classes that an installed package declares as an entry point
of the group :data:`ENTRY_POINT_GROUP` can be chosen, and what the entry point loads must be a
class implementing ``SarArchive`` before anything is called. sar-pipeline registers its own STAC
archive there as ``stac`` (``pyproject.toml``); a user's package registers theirs the same way::

    [project.entry-points."sar_pipeline.archives"]
    sethi = "my_package.sethi:SethiArchive"

and the resource then takes ``archive_class: sethi``. The entry point's ``module:Class`` value is
accepted as a synonym of its name (older run configs name classes that way); any other string is
refused with a :class:`~sar_pipeline.errors.ConfigError` without importing anything.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import Field

from sar_pipeline import paths
from sar_pipeline.archive.protocol import SarArchive
from sar_pipeline.errors import ConfigError
from sar_pipeline.hrefs import HrefPolicy
from sar_pipeline.settings import Settings

ENTRY_POINT_GROUP = "sar_pipeline.archives"
DEFAULT_ARCHIVE_CLASS = "stac"
SETTING = "archive.archive_class"
#: the environment variable the deployment sets to choose the archive (see :class:`ArchiveSettings`)
ARCHIVE_VARIABLE = "SAR_PIPELINE_ARCHIVE"


class ArchiveSettings(Settings):
    """The SAR archive flights are read from: a STAC catalogue by default, or an installed plug-in."""

    uri: str = Field(
        default_factory=lambda: str(paths.demo_archive_dir() / "catalog.json"),
        description="Root catalog.json of the STAC archive (local path or s3://…), or what the plug-in "
        "takes. Definitions read it from $SAR_PIPELINE_ARCHIVE when that is set; else the demo archive "
        "<data>/demo-archive/catalog.json ($SAR_PIPELINE_DATA, default ./data).",
    )
    archive_class: str = Field(
        default=DEFAULT_ARCHIVE_CLASS,
        description=f"Name of an installed SarArchive plug-in: an entry point of group '{ENTRY_POINT_GROUP}' "
        "('stac' = the STAC archive; your package registers its own class). Anything else is refused.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the plug-in class (e.g. asset_key for 'stac').",
    )
    allowed_href_roots: list[str] = Field(
        default_factory=list,
        description="Where catalogue links and scene rasters may point besides the catalogue's own folder: "
        "folders, URL prefixes (s3://bucket/prefix/, https://host/path/) or a bare scheme ('s3://' = any "
        "s3 URL). An href elsewhere (/etc/passwd, file://…, http://127.0.0.1:…) is skipped naming this "
        "setting.",
    )

    def href_policy(self) -> HrefPolicy:
        """Where this archive's hrefs may point (its catalogue's folder and ``allowed_href_roots``)."""
        return HrefPolicy.for_archive(self.uri, self.allowed_href_roots)

    def load(self) -> SarArchive:
        """The archive these settings name, built as ``cls(uri, **options)`` (plus ``allowed_href_roots``
        for plug-ins whose constructor takes it, as the STAC archive's does)."""
        cls = resolve_archive_class(self.archive_class)
        options = dict(self.options)
        if "allowed_href_roots" in inspect.signature(cls).parameters:
            options.setdefault("allowed_href_roots", list(self.allowed_href_roots))
        return cls(self.uri, **options)


def installed_archive_classes() -> dict[str, EntryPoint]:
    """The archive plug-ins installed in this environment, by entry-point name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_archive_class(name: str) -> type[SarArchive]:
    """The ``SarArchive`` class registered under ``name`` (an entry-point name or its ``module:Class``).

    Raises :class:`ConfigError` naming the setting when ``name`` is not a registered plug-in (nothing
    is imported then), when the plug-in cannot be imported, or when it is not a class implementing
    ``SarArchive`` (nothing of it is called then).
    """
    installed = installed_archive_classes()
    entry = installed.get(name) or next((ep for ep in installed.values() if ep.value == name), None)
    if entry is None:
        known = ", ".join(f"{n} ({ep.value})" for n, ep in sorted(installed.items())) or (
            "none: is sar-pipeline installed (scripts/setup, or pip install -e .)?"
        )
        raise ConfigError(
            f"{SETTING}={name!r}",
            f"not an installed SarArchive plug-in; installed: {known}. Register your class as an "
            f"entry point of group {ENTRY_POINT_GROUP!r} in your package's pyproject.toml and name it here",
        )
    try:
        cls = entry.load()
    except Exception as exc:  # an installed plug-in that fails to import: say which and why
        raise ConfigError(
            f"{SETTING}={name!r}", f"cannot import plug-in {entry.name} = {entry.value} ({exc})"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, SarArchive)):
        raise ConfigError(
            f"{SETTING}={name!r}",
            f"plug-in {entry.name} = {entry.value} is not a class implementing SarArchive "
            "(list_flights, list_scenes, open_scene)",
        )
    return cls


def load_archive(uri: str, archive_class: str = DEFAULT_ARCHIVE_CLASS, **options: Any) -> SarArchive:
    """Build the installed archive plug-in ``archive_class`` on ``uri``: ``cls(uri, **options)``."""
    return resolve_archive_class(archive_class)(uri, **options)
