"""The dataset card shown in the UI: counts, caption lengths, top words, a mosaic of tiles and captions."""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from upath import UPath

from sar_pipeline.captioning.base import DEFAULT_ACTIVATION_TOKEN
from sar_pipeline.dataset.radiometry import requantise
from sar_pipeline.dataset.schema import SPLITS
from sar_pipeline.pictures import figure_png, grid, png_bytes, to_display_uint8
from sar_pipeline.radiometry import RadiometryParams
from sar_pipeline.storage import as_path

# Words that say nothing about the ground; the activation token's words are removed separately.
_STOPWORDS = frozenset(
    "a an the of and or in on at to with by for from is are some many several there its it this that "
    "next near into between two three".split()
)
_WORD = re.compile(r"[a-z][a-z'-]*")


@dataclasses.dataclass(frozen=True)
class DatasetCard:
    """Markdown tables and PNG pictures describing one dataset version."""

    counts_markdown: str
    top_words_markdown: str
    caption_length_png: bytes
    mosaic_png: bytes | None


def counts_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: tiles per flight and frequency band (rows) × split (columns), with totals."""
    counts: collections.Counter = collections.Counter()
    for r in rows:
        counts[(r["flight_id"], r.get("frequency_band") or "unknown", r["split"])] += 1
    keys = sorted({(f, b) for f, b, _ in counts})
    lines = [
        "| flight | band | " + " | ".join(SPLITS) + " | total |",
        "|---|---|" + "---:|" * (len(SPLITS) + 1),
    ]
    for flight, band in keys:
        per = [counts[(flight, band, s)] for s in SPLITS]
        lines.append(f"| {flight} | {band} | " + " | ".join(map(str, per)) + f" | {sum(per)} |")
    totals = [sum(v for (_, _, s), v in counts.items() if s == split) for split in SPLITS]
    lines.append("| **all** | | " + " | ".join(f"**{t}**" for t in totals) + f" | **{sum(totals)}** |")
    return "\n".join(lines)


def caption_words(caption: str, activation_token: str = "") -> list[str]:
    """Lower-case words of a caption without the activation token's words and stop words."""
    skip = set(_WORD.findall(activation_token.lower()))
    return [w for w in _WORD.findall(caption.lower()) if w not in _STOPWORDS and w not in skip]


def top_words_markdown(
    texts: Sequence[str], activation_token: str = DEFAULT_ACTIVATION_TOKEN, top: int = 20
) -> str:
    """Markdown table of the ``top`` most frequent content words over the texts."""
    counter = collections.Counter(w for t in texts for w in caption_words(t, activation_token))
    lines = ["| word | count |", "|---|---:|"]
    lines += [f"| {w} | {n} |" for w, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    return "\n".join(lines)


def caption_length_histogram_png(texts: Sequence[str]) -> bytes:
    """Bar chart (PNG) of text lengths in words: how many texts have each length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = collections.Counter(len(t.split()) for t in texts)
    fig, ax = plt.subplots(figsize=(6, 3.0), dpi=100)
    xs = sorted(lengths)
    ax.bar(xs, [lengths[x] for x in xs], color="#4c72b0")
    ax.set_title("Text length")
    ax.set_xlabel("words per text")
    ax.set_ylabel("tiles")
    ax.grid(alpha=0.3, axis="y")
    return figure_png(fig)


def mosaic_png(samples: Sequence[tuple[bytes, str]], columns: int = 4, cell: int = 192) -> bytes | None:
    """A grid of SAR tiles (PNG bytes) each labelled with its caption; None when there are none."""
    if not samples:
        return None
    images = []
    for data, _ in samples:
        with Image.open(io.BytesIO(data)) as img:
            # 16-bit tiles would turn white in an RGB conversion: show their top 8 bits
            images.append(to_display_uint8(np.asarray(img)))
    picture = grid(images, columns=min(columns, len(images)), labels=[c for _, c in samples], cell=cell)
    return png_bytes(picture)


def sample_rows(rows: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Up to ``count`` rows spread evenly over the (sorted) rows, so every flight tends to show."""
    if count <= 0 or not rows:
        return []
    step = max(1, len(rows) // count)
    return list(rows[::step][:count])


def build_card(
    rows: Sequence[dict[str, Any]],
    storage_root: UPath | str | os.PathLike | None = None,
    mosaic_tiles: int = 12,
    activation_token: str = DEFAULT_ACTIVATION_TOKEN,
) -> DatasetCard:
    """The card for dataset rows (dicts with flight_id, frequency_band, split, text, caption and
    image_path relative to ``storage_root``); the mosaic shows ``mosaic_tiles`` of them, as the dataset
    holds them (a row with ``image_tile_radiometry`` is re-quantised from its tile file into the row's
    ``db_min``/``db_max``/``bit_depth``)."""
    texts = [r["text"] for r in rows]
    samples = []
    if storage_root is not None:
        root = as_path(storage_root)
        for r in sample_rows(rows, mosaic_tiles):
            data = (root / r["image_path"]).read_bytes()
            if r.get("image_tile_radiometry") and r.get("db_min") is not None:
                dataset = RadiometryParams.from_dict(r)
                data = requantise(data, r["image_tile_radiometry"], dataset, root / r["image_path"])
            samples.append((data, r.get("caption") or r["text"]))
    return DatasetCard(
        counts_markdown=counts_markdown(rows),
        top_words_markdown=top_words_markdown(texts, activation_token),
        caption_length_png=caption_length_histogram_png(texts),
        mosaic_png=mosaic_png(samples),
    )
