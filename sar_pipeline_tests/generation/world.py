"""A small land-cover world in the dataset's real layout, and a tiny model trained on it, for generation tests.

Each tile has a land-cover map (water, field, forest, urban blocks), a noise-free "idealised"
backscatter image and the SAR tile (the same with gamma speckle), stored as 8-bit levels (dB by
default, or any other :class:`~sar_pipeline.radiometry.RadiometryParams`) with the mapping recorded
(``normalisation``, ``db_min``, ``db_max``, ``bit_depth``, ``amplitude_scale``) like the
``training_dataset`` rows.
Run ``python -m sar_pipeline_tests.generation.world OUT`` to write one and look at it.
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

from sar_pipeline import radiometry
from sar_pipeline.archive.landcover import FIELD, FOREST, URBAN, WATER

PARAMS = radiometry.RadiometryParams(db_min=-25.0, db_max=5.0, bit_depth=8)
#: mean backscatter of each class, dB
CLASS_DB = {WATER: -20.0, FIELD: -10.0, FOREST: -6.0, URBAN: 0.0}
CAPTIONS = {WATER: "a lake", FIELD: "fields", FOREST: "a forest", URBAN: "a town"}


def landcover(rng: np.random.Generator, size: int) -> np.ndarray:
    """A tile of two to three regions: a background class and rectangles of others."""
    classes = list(CLASS_DB)
    codes = np.full((size, size), classes[rng.integers(len(classes))], np.uint8)
    for _ in range(2):
        r, c = rng.integers(0, size // 2, 2)
        h, w = rng.integers(size // 4, size // 2, 2)
        codes[r : r + h, c : c + w] = classes[rng.integers(len(classes))]
    return codes


def tile_images(
    codes: np.ndarray,
    rng: np.random.Generator,
    looks: int = 4,
    params: radiometry.RadiometryParams = PARAMS,
) -> tuple[np.ndarray, np.ndarray]:
    """(speckled SAR levels, idealised levels), uint8 quantised through ``params``."""
    db = np.zeros(codes.shape, np.float32)
    for code, level in CLASS_DB.items():
        db[codes == code] = level
    intensity = radiometry.db_to_intensity(db)
    speckled = intensity * rng.gamma(looks, 1.0 / looks, codes.shape)
    sar = radiometry.quantize_db(radiometry.intensity_to_db(speckled), params)
    ideal = radiometry.quantize_db(db, params)
    return sar, ideal


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_world(
    storage_root: str | Path,
    version: str = "g1",
    n_train: int = 24,
    size: int = 64,
    seed: int = 0,
    params: radiometry.RadiometryParams = PARAMS,
) -> Path:
    """Write the dataset version (tiles quantised through ``params``, recorded in its columns) and
    ``dataset/current.json``; return the version folder."""
    rng = np.random.default_rng(seed)
    folder = Path(storage_root) / "dataset" / version
    folder.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    counts = {}
    for split, n in (("train", n_train), ("validation", 4), ("test", 2)):
        rows = {k: [] for k in ("image", "landcover_image", "idealised_image")}
        meta = {k: [] for k in ("tile_id", "flight_id", "split", "text", "caption")}
        for i in range(n):
            codes = landcover(rng, size)
            sar, ideal = tile_images(codes, rng, params=params)
            tile_id = f"{split}-{i:03d}"
            main = max(CLASS_DB, key=lambda c: (codes == c).sum())
            rows["image"].append({"bytes": png(sar), "path": f"{tile_id}.png"})
            rows["landcover_image"].append({"bytes": png(codes), "path": f"{tile_id}_landcover.png"})
            rows["idealised_image"].append({"bytes": png(ideal), "path": f"{tile_id}_idealised.png"})
            meta["tile_id"].append(tile_id)
            meta["flight_id"].append("flight-a" if i % 2 else "flight-b")
            meta["split"].append(split)
            meta["caption"].append(CAPTIONS[main])
            meta["text"].append(f"An aerial view, {CAPTIONS[main]}")
        table = pa.table(
            {
                **{k: pa.array(v, type=image_type) for k, v in rows.items()},
                **{k: pa.array(v, type=pa.string()) for k, v in meta.items()},
                "normalisation": pa.array([params.normalisation] * n, pa.string()),
                "db_min": pa.array([params.db_min] * n, pa.float64()),
                "db_max": pa.array([params.db_max] * n, pa.float64()),
                "bit_depth": pa.array([params.bit_depth] * n, pa.int32()),
                "amplitude_scale": pa.array([params.amplitude_scale] * n, pa.float64()),
                "ground_sample_distance_m": pa.array([8.0] * n, pa.float64()),
            }
        )
        pq.write_table(table, folder / f"{split}.parquet")
        counts[split] = n
    info = {"version": version, "row_counts": counts, "flights": ["flight-a", "flight-b"]}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    (Path(storage_root) / "dataset" / "current.json").write_text(json.dumps({"version": version}))
    return folder


if __name__ == "__main__":
    print(write_world(sys.argv[1]))


def train_tiny_world(
    root: Path, version: str, n_train: int, checkpoint_every_steps: int, family: str = "sd15"
) -> dict:
    """A world of ``n_train`` 64-px tiles under ``root/storage`` (dataset ``version``), a tiny base
    model of ``family`` ("sd15" or "sdxl"), its latent cache, and a tiny SD run of 2 steps in
    ``models/sd/run1``; returns root, storage, base, run_dir and the run's final pipeline folder."""
    from sar_pipeline.diffusion.config import TrainSettings
    from sar_pipeline.diffusion.latent_cache import build_latent_cache
    from sar_pipeline.diffusion.models import load_base_model, write_tiny_base
    from sar_pipeline.diffusion.train import train

    storage = root / "storage"
    write_world(storage, version, n_train=n_train, size=64)
    base = write_tiny_base(root / "tiny-base", images=None, vae_steps=0, family=family)
    build_latent_cache(storage, version, load_base_model(base).vae, 64)
    run_dir = storage / "models" / "sd" / "run1"
    cfg = TrainSettings.from_dict(
        {
            "preset": "tiny_sdxl" if family == "sdxl" else "tiny",
            "base_model_path": str(base),
            "storage_root": str(storage),
            "dataset_version": version,
            "output_dir": str(run_dir),
            "resolution": 64,
            "train_batch_size": 4,
            "max_train_steps": 2,
            "checkpoint_every_steps": checkpoint_every_steps,
            "validation_prompts": [],
            "log_every_steps": 1,
        }
    )
    summary = train(cfg)
    return {
        "root": root,
        "storage": storage,
        "base": base,
        "run_dir": run_dir,
        "pipeline": Path(summary["pipeline"]),
    }
