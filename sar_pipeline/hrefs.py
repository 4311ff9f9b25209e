"""Hrefs read from archives: what is never written down (credentials) and where they may point.

**Redaction.** A pre-signed object-store URL carries its credential in the query string
(``X-Amz-Credential``, ``X-Amz-Signature``, ``sig=``…) and a URL may carry ``user:password@``.
Neither may reach a Parquet file, Dagster's event log or a log line: :func:`redact` removes the
query string and the userinfo of one href, :func:`redact_text` of every URL inside a text (an
error message quoting GDAL's, say). Every :class:`~sar_pipeline.errors.SarPipelineError` message
passes through :func:`redact_text`, and scene records are redacted when they become table rows.

**Reach.** An archive's catalogue decides which files the pipeline opens, so a hostile or broken
catalogue could make it read ``/etc/passwd``, ``file:///…`` or ``http://127.0.0.1:…`` (a service
on the host). :class:`HrefPolicy` allows an href only under the catalogue's own folder or under a
root the deployment lists (``archive.allowed_href_roots``: a folder, ``s3://bucket/prefix/``,
``https://host/path/``, or a bare ``s3://`` for a whole scheme); everything else is skipped
naming the rule. Paths are compared after resolving ``..`` and symbolic links.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "[redacted]"
ROOTS_SETTING = "archive.allowed_href_roots"

# a URL ends at a quote, bracket, comma or semicolon (text around it: "(s3://…)", "'…'", "a, b");
# once its query starts, only what a URL cannot hold ends it (a signature may hold any of those)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{},;?]+(?:\?[^\s\"<>]*)?")
# userinfo may hold any RFC 3986 sub-delimiter (``!$&'()*+,;=``), which ends a URL for _URL above:
# whatever lies between ``://`` and an ``@`` with no ``/``, ``?``, ``#`` or space between them
_USERINFO = re.compile(r"(?<=://)[^\s/?#@]+@")
# a query string (``?a=b&…``) after a path outside a URL (``scene.tif?X-Amz-Signature=…``)
_BARE_QUERY = re.compile(r"(?<=[^\s'\"?])\?[^\s'\"<>?]*=[^\s\"<>]*")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def redact(href: str) -> str:
    """``href`` without its query string and userinfo (replaced by ``[redacted]``); the rest kept."""
    if not isinstance(href, str):
        return href
    if "://" not in href:
        return _BARE_QUERY.sub("?" + REDACTED, href)
    try:
        parts = urlsplit(href)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = REDACTED if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact`), and bare ``?key=value`` queries too."""
    if not isinstance(text, str) or ("?" not in text and "@" not in text):
        return text
    text = _URL.sub(lambda m: redact(m.group(0)), text)
    text = _USERINFO.sub(REDACTED + "@", text)
    return _BARE_QUERY.sub("?" + REDACTED, text)


def is_redacted(href: str) -> bool:
    """Whether :func:`redact` removed something from this href (it cannot be opened as it is)."""
    return REDACTED in href


def _scheme(href: str) -> str:
    match = _SCHEME.match(href)
    # a Windows drive letter ("C:") is a path, not a scheme
    return match.group(1).lower() if match and len(match.group(1)) > 1 else ""


def normalise(href: str) -> str:
    """Canonical form of an href for the reach rule: no query/fragment/userinfo; local paths
    absolute with ``..`` and symbolic links resolved (``file://`` is a local path); URL paths
    with ``..`` resolved and scheme and host in lower case."""
    scheme = _scheme(href)
    if scheme in ("", "file"):
        path = urlsplit(href).path if scheme == "file" else href.split("?", 1)[0]
        return os.path.realpath(path)
    parts = urlsplit(href)
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    # decoded first: a server or object store decodes "%2e%2e/" into "../", which must not climb out
    path = posixpath.normpath(unquote(parts.path)) if parts.path else ""
    if path in (".", "/"):
        path = ""
    if parts.path.endswith("/") and path and not path.endswith("/"):
        path += "/"
    return f"{scheme}://{host}{path}"


def _as_root(href: str) -> str:
    """A root as a prefix that ends at a path boundary (``…/``); a bare scheme (``s3://``) stays."""
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://", href):
        return href.lower()
    root = normalise(href)
    return root if root.endswith("/") else root + "/"


def catalogue_root(uri: str) -> str:
    """The folder a catalogue's own files live under: the folder of a ``.json``, else ``uri`` itself."""
    base = href_without_query(uri)
    if base.lower().endswith(".json"):
        return base.rsplit("/", 1)[0] + "/" if "/" in base else "./"
    return base.rstrip("/") + "/"


def href_without_query(href: str) -> str:
    return href.split("?", 1)[0].split("#", 1)[0]


@dataclasses.dataclass(frozen=True)
class HrefPolicy:
    """Where an archive's hrefs may point: under ``catalogue`` or one of ``allowed_roots``."""

    catalogue: str
    allowed_roots: tuple[str, ...] = ()
    #: the setting that lists ``allowed_roots`` (named in refusals)
    setting: str = ROOTS_SETTING

    @classmethod
    def for_archive(
        cls, uri: str, allowed_roots: Iterable[str] = (), setting: str = ROOTS_SETTING
    ) -> HrefPolicy:
        """The policy of an archive at ``uri`` (its catalogue file, folder or API root)."""
        return cls(_as_root(catalogue_root(uri)), tuple(_as_root(r) for r in allowed_roots), setting)

    def problem(self, href: str, what: str = "href") -> str | None:
        """Why ``href`` may not be opened (a sentence naming the rule), or None when it may."""
        if not isinstance(href, str) or not href:
            return f"{what} is empty"
        target = normalise(href)
        probe = target if target.endswith("/") else target + "/"
        for root in (self.catalogue, *self.allowed_roots):
            if probe.startswith(root):
                return None
        allowed = ", ".join(redact(r) for r in self.allowed_roots) or "none"
        return (
            f"{what} {redact(href)} points outside the archive: not under the catalogue's folder "
            f"{redact(self.catalogue)} nor under any of {self.setting} ({allowed}); add its root "
            f"there to allow it"
        )
