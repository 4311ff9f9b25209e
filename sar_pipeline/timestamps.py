"""Acquisition and update times: the one parser every stage uses, always to timezone-aware UTC.

Times reach the pipeline as ISO 8601 text (STAC ``datetime``/``updated``, JSON, Parquet strings),
as TIFF/EXIF tag text (``"2019:03:04 10:00:00"``, GeoTIFF ``TIFFTAG_DATETIME``), as ``datetime``
objects, or as pandas ``Timestamp`` s read back from Parquet. A time without a zone is taken as UTC
(what STAC and SAR products mean by it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

_TIFF_FORMAT = "%Y:%m:%d %H:%M:%S"


def parse_utc(value: Any) -> dt.datetime | None:
    """``value`` as an aware UTC ``datetime``; ``None`` stays ``None``.

    Accepts ISO 8601 text (``Z`` or an offset; date-only means midnight), TIFF tag text, a
    ``datetime`` (naive = UTC, aware converted) or anything with ``to_pydatetime()`` (pandas).
    Raises ``ValueError`` naming the value for text that is neither format or another type.
    """
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp (nanosecond Parquet columns)
        value = value.to_pydatetime()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                value = dt.datetime.strptime(text, _TIFF_FORMAT)
            except ValueError:
                raise ValueError(
                    f"time {text!r} is neither ISO 8601 nor TIFF 'YYYY:MM:DD HH:MM:SS'"
                ) from None
    if not isinstance(value, dt.datetime):
        raise ValueError(f"time {value!r} is a {type(value).__name__}, not a datetime or text")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def iso_utc(value: Any) -> str:
    """``value`` (see :func:`parse_utc`, not ``None``) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    Fixed width, so such strings sort as the times do (the archive's new-flights cursor).
    """
    parsed = parse_utc(value)
    if parsed is None:
        raise ValueError("no time given")
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
