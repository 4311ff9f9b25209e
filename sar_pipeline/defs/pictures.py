"""Pictures in asset metadata: the one way every asset, check and observation shows one.

    metadata["mosaic"] = picture(storage, png, "tiles and captions")

stores the full picture once under ``<storage root>/pictures/`` (content-addressed) and returns a
``MetadataValue.md`` holding only a thumbnail and that file's path, so Dagster's event log stays a
few kB per event however many flights, checkpoints or sample grids are recorded
(:mod:`sar_pipeline.pictures` says why). A picture already written elsewhere under the storage root
(a checkpoint's sample grid, a flight's quick-look) is referenced where it lies: pass ``path``.
"""

from __future__ import annotations

import dagster as dg

from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.pictures import markdown_image, store_picture


def picture(storage: StorageRoot, png: bytes, alt: str, path: str | None = None) -> dg.MetadataValue:
    """A thumbnail of ``png`` with the path of the full picture, as Markdown metadata.

    ``path``: where the full picture already lies (it is then not stored again); by default it is
    stored under ``<storage root>/pictures/<content hash>.png``.
    """
    full_size = path or store_picture(storage.root(), png)
    return dg.MetadataValue.md(markdown_image(png, alt, full_size=full_size))
