"""Errors that name the input at fault and the reason, so a user can fix it."""

from __future__ import annotations

from sar_pipeline.hrefs import redact_text


def _redacted_link(link) -> property:
    """``BaseException.__cause__``/``__context__`` whose linked exception reads redacted."""
    return property(lambda error: _redacted_exception(link.__get__(error)), link.__set__)


class SarPipelineError(Exception):
    """Bad input: ``source`` names the file, item or option at fault, ``reason`` says why.

    Both are redacted (``sar_pipeline.hrefs.redact_text``): a pre-signed URL's query string or a
    URL's ``user:password@`` never reaches a message, a log line or the event log.
    """

    def __init__(self, source: object, reason: str):
        self.source = redact_text(str(source))
        self.reason = redact_text(str(reason))
        super().__init__(f"{self.source}: {self.reason}")

    # The exception this one was raised from (``raise … from exc``) or during (``__context__``) is
    # shown in tracebacks and in Dagster's failure events: a library's message quoting a pre-signed
    # URL is redacted there too.
    __cause__ = _redacted_link(BaseException.__cause__)
    __context__ = _redacted_link(BaseException.__context__)


class RedactedError(Exception):
    """Stands for another library's exception whose message held a credential (type and redacted text)."""


def _redacted_exception(exc: BaseException | None) -> BaseException | None:
    if exc is None or isinstance(exc, SarPipelineError | RedactedError):
        return exc
    text = str(exc)
    clean = redact_text(text)
    if clean == text:
        return exc
    return RedactedError(f"{type(exc).__module__}.{type(exc).__name__}: {clean}")


class ArchiveError(SarPipelineError):
    """A catalogue, flight or scene that cannot be read as a SAR archive."""


class RasterError(SarPipelineError):
    """A raster that cannot be used: no CRS, non-invertible transform, corrupt file, all nodata…"""


class RasterReadError(RasterError):
    """Pixels GDAL cannot decode: a truncated or corrupt file (the error names the file and window)."""


class ConfigError(SarPipelineError):
    """A configuration value that is unknown, missing or contradictory."""


class ModelError(SarPipelineError):
    """A model path that is missing, incomplete or not the expected kind of checkpoint."""
