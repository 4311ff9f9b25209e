"""Pictures in metadata: a thumbnail in the event log, the full picture once under the storage root."""

import base64
import io
import re

import dagster as dg
import numpy as np
from PIL import Image

from sar_pipeline.defs.pictures import picture
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.pictures import (
    THUMBNAIL_MAX_SIDE_PX,
    line_plot_png,
    markdown_image,
    png_bytes,
    store_picture,
    thumbnail,
)


def _speckle_png(rows: int, cols: int) -> bytes:
    rng = np.random.default_rng(0)
    return png_bytes((rng.gamma(1.0, 60.0, (rows, cols))).clip(0, 255).astype(np.uint8))


def _inline_image(markdown: str) -> Image.Image:
    data = re.search(r"\(data:image/(?:png|jpeg);base64,([^)]+)\)", markdown).group(1)
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_thumbnail_is_small_whatever_the_picture():
    big = _speckle_png(1024, 1536)  # a speckled mosaic: ~1.5 MB as PNG
    small, mime = thumbnail(big)
    with Image.open(io.BytesIO(small)) as img:
        assert max(img.size) == THUMBNAIL_MAX_SIDE_PX and img.size[0] > img.size[1]  # aspect kept
    assert mime == "image/jpeg" and len(small) < 40_000 < len(big)
    plot = line_plot_png({"loss": ([0, 1, 2], [1.0, 0.5, 0.3])}, "loss", "step", "MSE")
    small_plot, plot_mime = thumbnail(plot)
    assert len(small_plot) < 20_000 and plot_mime in ("image/png", "image/jpeg")
    assert thumbnail(plot) == (small_plot, plot_mime)  # deterministic: re-materialising logs the same text
    # a picture already smaller than a thumbnail keeps its size
    tiny = png_bytes(np.zeros((20, 30), np.uint8))
    assert _inline_image(markdown_image(tiny, "tiny")).size == (30, 20)


def test_pictures_are_stored_once_by_content(tmp_path):
    png = _speckle_png(64, 64)
    first = store_picture(tmp_path, png)
    assert first.startswith(str(tmp_path / "pictures")) and open(first, "rb").read() == png
    mtime = (tmp_path / "pictures").stat().st_mtime_ns
    assert store_picture(tmp_path, png) == first  # same content, same file, nothing written
    assert (tmp_path / "pictures").stat().st_mtime_ns == mtime
    assert store_picture(tmp_path, _speckle_png(64, 65)) != first


def test_picture_metadata_holds_a_thumbnail_and_the_path_of_the_full_picture(tmp_path):
    storage = StorageRoot(uri=str(tmp_path / "storage"))
    big = _speckle_png(900, 900)
    value = picture(storage, big, "tiles")
    assert isinstance(value, dg.MarkdownMetadataValue)
    path = re.search(r"full size: `([^`]+)`", value.value).group(1)
    assert open(path, "rb").read() == big
    assert max(_inline_image(value.value).size) == THUMBNAIL_MAX_SIDE_PX
    assert len(value.value) < 60_000 < len(big)
    # a picture already under the storage root is referenced where it lies, not copied
    elsewhere = tmp_path / "storage" / "flights" / "f" / "quicklook.png"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(big)
    assert f"`{elsewhere}`" in picture(storage, big, "look", path=str(elsewhere)).value
    assert len(list((tmp_path / "storage" / "pictures").iterdir())) == 1
