"""The one STAC I/O adapter: pystac reads and writes local paths, ``http(s)://`` and fsspec URLs.

pystac's own ``DefaultStacIO`` knows local files and HTTP; object stores (``s3://…``, ``gs://…``,
``memory://…``) go through fsspec via universal-pathlib, with ``storage_options`` (endpoint,
credentials, ``anon``…) passed on. Used for the SAR archive and for optical STAC catalogues alike.
"""

from __future__ import annotations

import re
from typing import Any

from pystac.stac_io import DefaultStacIO
from upath import UPath

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def is_fsspec_url(href: str) -> bool:
    """True for fsspec object-store URLs (``s3://…``, ``gs://…``, ``memory://…``), not local or HTTP."""
    match = _SCHEME.match(href)
    return bool(match) and match.group(1).lower() not in ("file", "http", "https")


def href_path(href: str, storage_options: dict[str, Any] | None = None) -> UPath:
    """A path for ``href``: fsspec URLs with ``storage_options``, local paths as they are."""
    return UPath(href, **(storage_options or {})) if is_fsspec_url(href) else UPath(href)


class FsspecStacIO(DefaultStacIO):
    """pystac I/O through fsspec for object-store URLs; local paths and ``http(s)://`` keep pystac's reader."""

    def __init__(self, storage_options: dict[str, Any] | None = None):
        super().__init__()
        self.storage_options = dict(storage_options or {})

    def read_text_from_href(self, href: str) -> str:
        if is_fsspec_url(href):
            return href_path(href, self.storage_options).read_text(encoding="utf-8")
        return super().read_text_from_href(href)

    def write_text_to_href(self, href: str, txt: str) -> None:
        if is_fsspec_url(href):
            href_path(href, self.storage_options).write_text(txt, encoding="utf-8")
        else:
            super().write_text_to_href(href, txt)
