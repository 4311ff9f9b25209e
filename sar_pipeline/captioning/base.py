"""The captioner interface and the final prompt text (activation token + caption + acquisition words)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from sar_pipeline.errors import RasterError

#: The paper's activation token (§4.1): every training text starts with it.
DEFAULT_ACTIVATION_TOKEN = "An aerial view"


@dataclass(frozen=True)
class CaptionInput:
    """What a captioner may look at for one tile.

    ``optical_rgb``: the co-located optical tile, uint8 (rows, cols, 3), in the SAR tile's grid.
    ``landcover``: uint8 land-cover codes (rows, cols) of the tile (codes in
    ``sar_pipeline.archive.landcover``), 0 = nodata. ``labels``: scene-level class names
    (e.g. BigEarthNet CORINE labels). Each captioner uses what it needs and says if it is missing.
    """

    tile_id: str
    optical_rgb: np.ndarray | None = None
    landcover: np.ndarray | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Captioner(Protocol):
    """Writes one caption per input; ``captioner_id``/``version`` are recorded beside each caption.

    A captioner may also have ``needs``: a frozenset of ``"optical"``, ``"landcover"``, ``"labels"``
    naming the inputs it reads, so the caller loads only those (all of them when absent).
    """

    captioner_id: str
    version: str

    def caption(self, inputs: Sequence[CaptionInput]) -> list[str]:
        """One caption per input, in order; raise a SarPipelineError naming the tile on bad input."""
        ...


def check_optical_not_blank(image: np.ndarray, tile_id: str) -> None:
    """Raise RasterError if the optical tile is constant (blank) or empty: there is nothing to caption."""
    if image.size == 0:
        raise RasterError(tile_id, "optical tile is empty (0 pixels)")
    lo, hi = float(np.min(image)), float(np.max(image))
    if lo == hi:
        raise RasterError(tile_id, f"optical tile is blank: every pixel has the value {lo:g}")


def acquisition_words(
    frequency_band: str | None = None,
    polarizations: str | Sequence[str] | None = None,
    incidence_angle_deg: float | None = None,
    ground_sample_distance_m: float | None = None,
) -> str:
    """SAR acquisition parameters in words: ``"X-band, HH polarisation, incidence 45°, 1.0 m ground resolution"``.

    Missing values (None, NaN, empty) are left out; the result may be ``""``.
    """
    parts: list[str] = []
    if frequency_band and str(frequency_band).strip():
        band = str(frequency_band).strip()
        parts.append(band if band.lower().endswith("band") else f"{band}-band")
    pols = polarization_list(polarizations)
    if pols:
        parts.append(f"{'+'.join(pols)} polarisation")
    if _finite(incidence_angle_deg):
        parts.append(f"incidence {float(incidence_angle_deg):.0f}°")
    if _finite(ground_sample_distance_m):
        parts.append(f"{float(ground_sample_distance_m):.1f} m ground resolution")
    return ", ".join(parts)


def compose_text(caption: str, activation_token: str = DEFAULT_ACTIVATION_TOKEN) -> str:
    """Final caption text: ``"<activation token>, <caption>"`` (the dataset may append acquisition
    words, ``include_metadata_text``).

    The caption's trailing full stop (RSICD/UCM style ``" ."``) is dropped and its first letter
    lower-cased unless it starts an acronym, so the parts read as one phrase.
    """
    body = " ".join(caption.split()).rstrip(" .")
    if body and body[0].isupper() and not (len(body) > 1 and body[1].isupper()):
        body = body[0].lower() + body[1:]
    parts = [p for p in (activation_token.strip(), body) if p]
    return ", ".join(parts)


def prompt_text(
    prompt: str, activation_token: str = DEFAULT_ACTIVATION_TOKEN, learned_token: str = ""
) -> str:
    """The conditioning text of ``prompt`` in the form training saw: a text that already starts with
    the activation token is kept as it is, any other is composed as the dataset's texts are
    (:func:`compose_text`: ``"An aerial view, a river"``). A ``learned_token`` (textual inversion,
    e.g. ``"<sar>"``) leads every text once: ``"<sar> An aerial view, a river"``.

    The one place training (captions lacking the token, validation prompts) and generation turn a
    prompt into the text the model is conditioned on.
    """
    text = " ".join(prompt.split())
    learned = learned_token.strip()
    if learned and text.startswith(learned):
        text = text[len(learned) :].lstrip()
    token = activation_token.strip()
    if token and not text.lower().startswith(token.lower()):
        text = compose_text(text, token)
    return f"{learned} {text}" if learned else text


def _finite(value: object) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def polarization_list(polarizations: str | Sequence[str] | None) -> list[str]:
    """Polarisation names, upper-case, from a list or a text such as ``"HH+HV"``/``"hh, hv"``."""
    if polarizations is None:
        return []
    if isinstance(polarizations, str):
        items = polarizations.replace("+", ",").replace(" ", ",").split(",")
    else:
        try:
            items = [str(p) for p in polarizations]
        except TypeError:
            return []
    return [p.strip().upper() for p in items if p and p.strip()]
