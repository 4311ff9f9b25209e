"""A tiny synthetic training dataset in the real layout (issue 4's Parquet), for diffusion tests.

Dark speckled tiles captioned as water, bright textured tiles captioned as urban areas, written as
8-bit single-band PNGs in ``image`` (struct<bytes, path>) with ``text``, ``split``, ``tile_id`` and
``flight_id``, under ``<storage>/dataset/<version>/{train,validation,test}.parquet`` plus
``dataset/current.json``. Run ``python -m sar_pipeline_tests.diffusion.synthetic OUT`` to look at one.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

WATER_CAPTIONS = ("An aerial view of water", "An aerial view of a river", "An aerial view of a lake")
URBAN_CAPTIONS = (
    "An aerial view of an urban area",
    "An aerial view of buildings",
    "An aerial view of a town",
)


def _tile(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    # SAR-like: multiplicative (gamma) speckle on a mean level; water is dark, urban bright with blocks
    speckle = rng.gamma(4.0, 0.25, (size, size))
    if kind == "water":
        level = np.full((size, size), 25.0)
    else:
        level = np.full((size, size), 170.0)
        for _ in range(4):
            r, c = rng.integers(0, size - size // 4, 2)
            level[r : r + size // 4, c : c + size // 4] = 235.0
    return np.clip(level * speckle, 0, 255).astype(np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_synthetic_dataset(
    storage_root: str | Path,
    version: str = "v1",
    n_per_class: int = 16,
    size: int = 64,
    seed: int = 0,
    held_out_per_class: int = 2,
) -> Path:
    """Write the dataset (``held_out_per_class`` tiles per class in validation and in test);
    return ``<storage>/dataset/<version>``."""
    rng = np.random.default_rng(seed)
    folder = Path(storage_root) / "dataset" / version
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (
        ("train", n_per_class),
        ("validation", held_out_per_class),
        ("test", held_out_per_class),
    ):
        rows = {"image": [], "text": [], "split": [], "tile_id": [], "flight_id": []}
        for i in range(n):
            for kind, captions in (("water", WATER_CAPTIONS), ("urban", URBAN_CAPTIONS)):
                tile_id = f"{split}-{kind}-{i:03d}"
                rows["image"].append({"bytes": _png(_tile(kind, size, rng)), "path": f"{tile_id}.png"})
                rows["text"].append(captions[i % len(captions)])
                rows["split"].append(split)
                rows["tile_id"].append(tile_id)
                rows["flight_id"].append("synthetic-flight")
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        table = pa.table(
            {
                "image": pa.array(rows["image"], type=image_type),
                **{k: pa.array(v, type=pa.string()) for k, v in rows.items() if k != "image"},
            }
        )
        pq.write_table(table, folder / f"{split}.parquet")
    (Path(storage_root) / "dataset" / "current.json").write_text(json.dumps({"version": version}))
    return folder


if __name__ == "__main__":
    print(write_synthetic_dataset(sys.argv[1]))


def sample_mean_amplitude(pipe, prompt: str, seeds, size: int, guidance_scale: float = 7.5) -> float:
    """Mean pixel value (0–1) of ``pipe``'s samples of ``prompt`` over fixed ``seeds``."""
    import numpy as np
    import torch

    images = [
        pipe(
            prompt,
            num_inference_steps=10,
            guidance_scale=guidance_scale,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images[0]
        for seed in seeds
    ]
    return float(np.mean(images))
