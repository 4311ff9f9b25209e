"""PNG: the one encoder (tiles and pictures alike) and small pictures for people.

Quick-looks, tile mosaics, sample grids and loss curves for Dagster metadata, and the PNG bytes of
the tiles themselves: everything that writes a PNG goes through :func:`png_bytes`.

Pictures and the event log: Dagster keeps every metadata value of every materialisation and
observation in its event log (a row in SQLite/Postgres, read by the UI for each page). A full-size
picture inlined as base64 costs 100 kB–1 MB per event, for every flight and every checkpoint, so
the event log would grow with the pictures rather than with the events. Metadata therefore carries
only a thumbnail (:func:`markdown_image`: at most :data:`THUMBNAIL_MAX_SIDE_PX` pixels a side, a few
kB) and the path of the full picture, stored once as a file under the storage root
(:func:`store_picture`, content-addressed: re-materialising the same picture writes nothing new).
Assets go through the one Dagster helper, :func:`sar_pipeline.defs.pictures.picture`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from upath import UPath

from sar_pipeline.storage import atomic_write_bytes


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


def png_bytes(
    image: np.ndarray | Image.Image, compress_level: int = 6, *, huffman_only: bool = False
) -> bytes:
    """PNG bytes of a uint8 (L), uint16 (I;16), RGB/RGBA uint8 array or a Pillow image.

    ``compress_level`` is zlib's (0 = stored … 9; 6 is Pillow's default). ``huffman_only=True``
    (used for SAR tiles) writes single-band uint8/uint16 arrays directly: PNG filter "none" on every
    row and one zlib stream with ``Z_HUFFMAN_ONLY``. Speckled SAR has no repeated strings or smooth
    gradients for PNG's row filters or LZ77 to exploit, so this gives files a little *smaller* than
    Pillow's level-1 output (182 vs 205 kB for a 512² 8-bit tile) about 6× faster, and any level ≥ 1
    gives the same bytes. Otherwise Pillow encodes (adaptive row filters + LZ77: right for land-cover
    codes and smooth images). Any decoder reads the same pixels either way.
    """
    if isinstance(image, Image.Image):
        pil = image
    else:
        array = np.asarray(image)
        if huffman_only and array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
            return _huffman_only_png(array, compress_level)
        pil = Image.fromarray(array)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _huffman_only_png(image: np.ndarray, compress_level: int) -> bytes:
    rows, cols = image.shape
    bit_depth = 8 if image.dtype == np.uint8 else 16
    scanlines = np.zeros((rows, 1 + cols * bit_depth // 8), dtype=np.uint8)  # filter byte 0 = none
    scanlines[:, 1:] = (image if bit_depth == 8 else image.astype(">u2")).view(np.uint8).reshape(rows, -1)
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    # zlib releases the GIL: threads encode in parallel
    idat = compressor.compress(scanlines) + compressor.flush()
    header = struct.pack(">IIBBBBB", cols, rows, bit_depth, 0, 0, 0, 0)  # greyscale, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file (a ``Path`` or ``UPath``: local or object storage), from its header."""
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        return img.size


def to_display_uint8(image: np.ndarray) -> np.ndarray:
    """A quantised tile as uint8 for pictures (16-bit tiles keep their top 8 bits)."""
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)


def grid(
    images: Sequence[np.ndarray | Image.Image],
    columns: int,
    labels: Sequence[str] | None = None,
    cell: int = 192,
) -> Image.Image:
    """Lay images out in a grid of ``cell``-pixel squares, each with an optional label below.

    Each image is scaled to fit its square with its aspect ratio kept (centred, white margins)."""
    label_h = 14 if labels else 0
    rows = max(1, -(-len(images) // columns))
    canvas = Image.new("RGB", (columns * cell, rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, im in enumerate(images):
        pil = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))
        scale = cell / max(pil.width, pil.height)
        size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        pil = pil.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        x, y = (i % columns) * cell, (i // columns) * (cell + label_h)
        canvas.paste(pil, (x + (cell - size[0]) // 2, y + (cell - size[1]) // 2))
        if labels:
            draw.text((x + 2, y + cell), str(labels[i])[: cell // 6], fill="black")
    return canvas


#: longest side of the thumbnail a picture leaves in Dagster's event log (pixels)
THUMBNAIL_MAX_SIDE_PX = 320
#: folder under the storage root holding the full-size pictures of metadata (content-addressed)
PICTURES_FOLDER = "pictures"


def thumbnail(png: bytes, max_side_px: int = THUMBNAIL_MAX_SIDE_PX) -> tuple[bytes, str]:
    """A small copy of a picture for the event log: (encoded bytes, MIME type).

    Scaled (Lanczos) so its longest side is at most ``max_side_px``, then encoded both as a
    64-colour PNG (sharp for plots and labels) and as a JPEG of quality 80 (far smaller for
    speckled SAR and photos); the smaller is kept. Deterministic for the same input.
    """
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        pil = img.convert("RGBA") if img.mode in ("RGBA", "LA", "P", "PA") else img.convert("RGB")
    if max(pil.size) > max_side_px:
        scale = max_side_px / max(pil.size)
        size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        pil = pil.resize(size, Image.Resampling.LANCZOS)
    if pil.mode == "RGBA":  # pictures are shown on white: flatten transparency
        flat = Image.new("RGB", pil.size, "white")
        flat.paste(pil, mask=pil.getchannel("A"))
        pil = flat
    palette = io.BytesIO()
    pil.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        palette, format="PNG", optimize=True
    )
    jpeg = io.BytesIO()
    pil.save(jpeg, format="JPEG", quality=80, optimize=True)
    if len(jpeg.getvalue()) < len(palette.getvalue()):
        return jpeg.getvalue(), "image/jpeg"
    return palette.getvalue(), "image/png"


def markdown_image(png: bytes, alt: str = "image", full_size: str | None = None) -> str:
    """Markdown showing a picture in Dagster's UI (``MetadataValue.md``) as an inline thumbnail.

    Only the thumbnail (:func:`thumbnail`) enters the event log; ``full_size``, when given, is where
    the full picture lies (a path or URI under the storage root), written below it.
    """
    small, mime = thumbnail(png)
    text = f"![{alt}](data:{mime};base64,{base64.b64encode(small).decode()})"
    return text + (f"\n\nfull size: `{full_size}`" if full_size else "")


def picture_name(png: bytes) -> str:
    """The content-addressed file name of a picture: ``<first 20 hex digits of its SHA-256>.png``."""
    return hashlib.sha256(png).hexdigest()[:20] + ".png"


def store_picture(storage_root, png: bytes) -> str:
    """Write a full-size picture under ``<storage root>/pictures/`` once; return its path (or URI).

    Content-addressed: the same picture always lands at the same name and is written only when
    absent, so re-materialising writes nothing and history keeps pointing at what it showed.
    ``storage_root``: a local folder, ``Path`` or ``UPath`` (``s3://…``).
    """
    path = UPath(storage_root) / PICTURES_FOLDER / picture_name(png)
    if not path.exists():
        atomic_write_bytes(path, png)
    return str(path)


def line_plot_png(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    markers: bool = False,
) -> bytes:
    """A line plot (e.g. loss curve) as PNG bytes, drawn with matplotlib's Agg backend; ``markers``
    draws each point too (a series of one point shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, (x, y) in series.items():
        ax.plot(list(x), list(y), label=name, marker="o" if markers else None)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return figure_png(fig)


def figure_png(fig) -> bytes:
    """A matplotlib figure as reproducible PNG bytes (no software/time stamp); closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
