"""Template captions from a land-cover raster or a list of class labels (deterministic, no model).

Used by the demo archive (which carries a land-cover raster per tile but no optical BLIP
weights) and for BigEarthNet patches, whose CORINE labels describe the ground. Wording varies
with content — which classes are present, how much of the tile they cover, and whether water or
roads run across the tile — never at random, so the same tile always gets the same caption.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sar_pipeline.archive.landcover import (
    BARE,
    BUILDING,
    FIELD,
    FOREST,
    GRASSLAND,
    NODATA,
    ROAD,
    SHRUBLAND,
    SNOW,
    URBAN,
    WATER,
    WETLAND,
)
from sar_pipeline.captioning.base import CaptionInput
from sar_pipeline.errors import RasterError

#: Below this share of the valid pixels a class is not mentioned.
MIN_MENTION_FRACTION = 0.02

# CORINE Land Cover level-3 names (as in BigEarthNet's labels_metadata.json) → words.
CORINE_PHRASES: dict[str, str] = {
    "continuous urban fabric": "a dense town",
    "discontinuous urban fabric": "scattered houses",
    "industrial or commercial units": "industrial buildings",
    "road and rail networks and associated land": "roads and railways",
    "port areas": "a port",
    "airports": "an airport",
    "mineral extraction sites": "a quarry",
    "dump sites": "a dump site",
    "construction sites": "a construction site",
    "green urban areas": "urban parks",
    "sport and leisure facilities": "sports grounds",
    "non-irrigated arable land": "fields",
    "permanently irrigated land": "irrigated fields",
    "rice fields": "rice fields",
    "vineyards": "vineyards",
    "fruit trees and berry plantations": "orchards",
    "olive groves": "olive groves",
    "pastures": "pastures",
    "annual crops associated with permanent crops": "mixed crops",
    "complex cultivation patterns": "a patchwork of small fields",
    "land principally occupied by agriculture, with significant areas of natural vegetation": "farmland with patches of natural vegetation",
    "agro-forestry areas": "wooded farmland",
    "broad-leaved forest": "a broad-leaved forest",
    "coniferous forest": "a coniferous forest",
    "mixed forest": "a mixed forest",
    "natural grassland": "grassland",
    "moors and heathland": "heathland",
    "sclerophyllous vegetation": "scrub",
    "transitional woodland/shrub": "young woodland",
    "beaches, dunes, sands": "beaches and dunes",
    "bare rock": "bare rock",
    "sparsely vegetated areas": "sparse vegetation",
    "burnt areas": "a burnt area",
    "glaciers and perpetual snow": "snow and ice",
    "inland marshes": "marshes",
    "peatbogs": "peat bogs",
    "salt marshes": "salt marshes",
    "salines": "salt pans",
    "intertidal flats": "tidal flats",
    "water courses": "a river",
    "water bodies": "a lake",
    "coastal lagoons": "a coastal lagoon",
    "estuaries": "an estuary",
    "sea and ocean": "the sea",
}


class TemplateCaptioner:
    """Captions from each input's land-cover raster (preferred) or its label list."""

    captioner_id = "template"
    version = "1"
    needs = frozenset({"landcover", "labels"})

    def caption(self, inputs: Sequence[CaptionInput]) -> list[str]:
        """One caption per input; RasterError naming the tile if it has neither land cover nor labels."""
        out = []
        for item in inputs:
            if item.landcover is not None:
                out.append(caption_from_landcover(item.landcover, item.tile_id))
            elif item.labels:
                out.append(caption_from_labels(item.labels))
            else:
                raise RasterError(
                    item.tile_id, "no land-cover raster and no labels: the template captioner needs one"
                )
        return out


def caption_from_labels(labels: Sequence[str]) -> str:
    """A caption from class names in their given order: the first is the subject, the rest follow "with"."""
    phrases: list[str] = []
    for label in labels:
        phrase = CORINE_PHRASES.get(label.strip().lower(), label.strip().lower())
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        return "an unlabelled landscape"
    if len(phrases) == 1:
        return phrases[0]
    return f"{phrases[0]} with {_join(phrases[1:])}"


def caption_from_landcover(landcover: np.ndarray, tile_id: str = "tile") -> str:
    """A caption from a land-cover raster's class fractions and the shape of its water and roads.

    Water or roads reaching two opposite edges of the tile are linear features ("a river crossing fields");
    the class covering the most ground is what they cross; the other classes above
    MIN_MENTION_FRACTION follow after "with", largest first, with size words from their share.
    """
    codes = np.asarray(landcover)
    if codes.ndim != 2:
        raise RasterError(tile_id, f"land-cover raster must be 2-D, got shape {codes.shape}")
    valid = codes != NODATA
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise RasterError(tile_id, "land-cover raster has no valid pixels (all nodata)")

    def share(*classes: int) -> float:
        return float(np.isin(codes, classes).sum()) / n_valid

    water, road = share(WATER), share(ROAD)
    area_shares = {
        "field": share(FIELD),
        "forest": share(FOREST),
        "built": share(URBAN, BUILDING),
        # the classes a land-cover product (WorldCover) adds to the demo's
        "grassland": share(GRASSLAND),
        "shrubland": share(SHRUBLAND),
        "bare": share(BARE),
        "snow": share(SNOW),
        "wetland": share(WETLAND),
    }
    linear: list[str] = []
    if water >= MIN_MENTION_FRACTION:
        if _crosses(codes == WATER) and water < 0.4:
            linear.append("a wide river" if water >= 0.15 else "a river")
        else:
            area_shares["water"] = water
    if road >= 0.005:
        if _crosses(codes == ROAD):
            linear.append("roads" if road >= 0.08 else "a road")
        else:
            area_shares["road"] = road

    areas = sorted(
        ((name, f) for name, f in area_shares.items() if f >= MIN_MENTION_FRACTION),
        key=lambda nf: (-nf[1], nf[0]),
    )
    phrases = [_area_phrase(name, f) for name, f in areas]
    if linear:
        subject = " and ".join(linear)
        if not phrases:
            return subject
        text = f"{subject} crossing {phrases[0]}"
        rest = phrases[1:]
    else:
        if not phrases:
            return "an open landscape"
        text, rest = phrases[0], phrases[1:]
    if rest:
        text += f" with {_join(rest)}"
    return text


def _area_phrase(name: str, fraction: float) -> str:
    if name == "field":
        return "a few fields" if fraction < 0.15 else ("fields" if fraction < 0.6 else "wide farmland")
    if name == "forest":
        return "a small wood" if fraction < 0.1 else ("a forest" if fraction < 0.5 else "a large forest")
    if name == "built":
        if fraction < 0.05:
            return "a few houses"
        if fraction < 0.2:
            return "a small village"
        return "a town" if fraction < 0.5 else "a dense urban area"
    if name == "water":
        return "a pond" if fraction < 0.08 else ("a lake" if fraction < 0.5 else "a large lake")
    if name == "road":
        return "a short road"
    small, large = {
        "grassland": ("a meadow", "grassland"),
        "shrubland": ("some scrub", "scrubland"),
        "bare": ("a patch of bare ground", "bare ground"),
        "snow": ("a patch of snow", "snow fields"),
        "wetland": ("a marsh", "wetlands"),
    }[name]
    return small if fraction < 0.15 else large


def _crosses(mask: np.ndarray) -> bool:
    """True if the mask reaches two opposite edges of the tile (a feature running across it)."""
    return bool((mask[0, :].any() and mask[-1, :].any()) or (mask[:, 0].any() and mask[:, -1].any()))


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]
