"""Small PNG pictures for people: quick-looks, tile mosaics, sample grids, loss curves."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(image: np.ndarray, nodata_mask: np.ndarray | None = None, percentiles=(2, 98)) -> np.ndarray:
    """Stretch a single-band or RGB array to uint8 between the given percentiles (nodata → 0)."""
    arr = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(arr) if nodata_mask is None else (~nodata_mask & np.isfinite(arr))
    if arr.ndim == 3 and valid.ndim == 2:
        valid = np.broadcast_to(valid[..., None], arr.shape)
    if not valid.any():
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = np.percentile(arr[valid], percentiles)
    out = np.clip((arr - lo) / max(hi - lo, 1e-12), 0, 1) * 255
    out[~valid] = 0
    return out.astype(np.uint8)


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def grid(
    images: Sequence[np.ndarray | Image.Image],
    columns: int,
    labels: Sequence[str] | None = None,
    cell: int = 192,
) -> Image.Image:
    """Lay images out in a grid of ``cell``-pixel squares, each with an optional label below."""
    label_h = 14 if labels else 0
    rows = max(1, -(-len(images) // columns))
    canvas = Image.new("RGB", (columns * cell, rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, im in enumerate(images):
        pil = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))
        pil = pil.convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR)
        x, y = (i % columns) * cell, (i // columns) * (cell + label_h)
        canvas.paste(pil, (x, y))
        if labels:
            draw.text((x + 2, y + cell), str(labels[i])[: cell // 6], fill="black")
    return canvas


def markdown_image(png: bytes, alt: str = "image") -> str:
    """Markdown embedding a PNG inline (what Dagster's UI shows for ``MetadataValue.md``)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def line_plot_png(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str) -> bytes:
    """A line plot (e.g. loss curve) as PNG bytes, drawn with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, (x, y) in series.items():
        ax.plot(list(x), list(y), label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
