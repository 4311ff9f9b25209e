"""The bad-input corpus of issue 13: every kind of hostile or broken input a user can hand the pipeline,
written by this script (no binary blobs in git), each with the outcome the pipeline must give.

``python sar_pipeline_tests/reliability/corpus.py DIR`` writes it (to look at); the tests call
:func:`write_corpus` into a temporary folder. ``docs/reliability.md``'s table is generated from
:data:`KINDS` (``python sar_pipeline_tests/reliability/corpus.py --doc`` rewrites it in place;
``test_reliability_doc.py`` fails when it is stale).

Layout of what :func:`write_corpus` writes under ``DIR``:

=========================  ==========================================================================
``catalog.json``           a STAC catalogue holding the flight ``flight-corpus``: one good scene (``good``,
                           tiled into several tiles) beside one item per bad scene / bad STAC kind, and
                           the flight-level bad kinds (collections with bad ids, a duplicate flight id,
                           an unreadable child catalogue).
``scenes/``                the rasters the items point to (``<kind>.tif``).
``optical/``               optical mosaics: a good one covering the flight, and the bad ones.
``captions/``              Karpathy-format caption sets (one good, the bad ones).
``models/``                a tiny base model folder and broken copies, training checkpoints to corrupt.
``configs/``               ``sar-pipeline run --config`` files.
=========================  ==========================================================================

Outcomes: ``error`` — the stage fails with a message naming the input and the reason, the previous
good output stays; ``skip`` — the input is left out, the reason recorded in the asset's metadata (and
log) naming it, every good input beside it processed; ``handled`` — the input is usable and is used
correctly (e.g. non-finite pixels counted and treated as nodata), said in the metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer

FLIGHT = "flight-corpus"
CRS = "EPSG:32631"
ORIGIN = (520_000.0, 4_810_000.0)
#: the tiling every corpus flight is run with (the good scene gives 9 tiles)
TILING = {"ground_sample_distance_m": 2.0, "tile_size": 32}
GOOD_SHAPE = (192, 192)  # 1 m pixels → 96 px at 2 m → 3 × 3 tiles of 32
WHEN = "2024-06-01T10:30:00Z"


@dataclasses.dataclass(frozen=True)
class BadInput:
    """One kind of bad input and what the pipeline must do with it."""

    kind: str
    #: where it enters: scene (a raster of a flight), stac (the catalogue), optical, captions, model,
    #: checkpoint, config, storage
    stage: str
    description: str
    #: ``error`` | ``skip`` | ``handled`` (module doc)
    outcome: str
    #: what the message must say (each, case-insensitive), besides naming the input
    reason: tuple[str, ...]
    #: the test (``file::function``) that proves the outcome
    test: str
    #: the name the message must contain (file name, id); default: the kind's own file/item id
    names: str = ""

    @property
    def name(self) -> str:
        return self.names or self.kind


_SCENE_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_scene"
_FLIGHT_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_flight"
_OPTICAL_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_optical_mosaic"
_CAPTION_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_caption_set"
_MODEL_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_model_folder"
_CONFIG_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_run_config"
_STORAGE_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_storage"
_TILING_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_tiling_config"
_DATASET_TEST = "sar_pipeline_tests/reliability/test_corpus.py::test_bad_flight_outputs_in_the_dataset"

KINDS: tuple[BadInput, ...] = (
    # -- scene rasters (items of flight-corpus; sar_scenes + sar_tiles) -----------------------------
    BadInput("truncated", "scene", "GeoTIFF cut in half (later blocks missing)", "skip", ("window rows",), _SCENE_TEST, "truncated.tif"),
    BadInput("corrupt-blocks", "scene", "GeoTIFF whose compressed blocks are overwritten with random bytes", "skip", ("window rows",), _SCENE_TEST, "corrupt-blocks.tif"),
    BadInput("wrong-magic", "scene", "a PNG file named .tif (wrong magic number)", "skip", ("no projection info",), _SCENE_TEST),
    BadInput("text-as-tiff", "scene", "a text file named .tif", "skip", ("cannot read the raster",), _SCENE_TEST, "text-as-tiff.tif"),
    BadInput("huge-header", "scene", "a 10⁶ × 10⁶-pixel GeoTIFF header (sparse, a few hundred KB)", "skip", ("max_scene_pixels",), _SCENE_TEST),
    BadInput("huge-record", "scene", "item proj:shape claiming 5·10⁶ × 5·10⁶ pixels (the raster is small)", "skip", ("max_scene_pixels",), _SCENE_TEST),
    BadInput("no-crs", "scene", "raster without CRS, item without proj:code", "skip", ("no crs",), _SCENE_TEST),
    BadInput("degenerate-transform", "scene", "proj:transform with zero pixel size", "skip", ("not an invertible affine transform",), _SCENE_TEST),
    BadInput("non-invertible-transform", "scene", "raster header geotransform with parallel axes (determinant 0)", "skip", ("not an invertible affine transform",), _SCENE_TEST),
    BadInput("unknown-epsg", "scene", "proj:code EPSG:999999", "skip", ("epsg:999999", "not a crs"), _SCENE_TEST),
    BadInput("nan-amplitude", "scene", "1 % of the pixels NaN", "handled", ("non-finite pixels as nodata",), _SCENE_TEST),
    BadInput("inf-amplitude", "scene", "1 % of the pixels +inf", "handled", ("non-finite pixels as nodata",), _SCENE_TEST),
    BadInput("negative-amplitude", "scene", "amplitude < 0 everywhere", "skip", ("negative pixel value", "unit/scale/offset"), _SCENE_TEST, "negative-amplitude.tif"),
    BadInput("all-nodata", "scene", "every pixel the declared nodata value", "skip", ("max_nodata_fraction",), _SCENE_TEST),
    BadInput("complex-as-amplitude", "scene", "complex64 SLC pixels where the item declares amplitude", "handled", ("unit complex (data type)",), _SCENE_TEST),
    BadInput("amplitude-as-complex", "scene", "float32 amplitude where the item declares a complex SLC (magnitude = amplitude)", "handled", ("unit complex (declared)",), _SCENE_TEST),
    BadInput("one-pixel", "scene", "a 1 × 1 scene", "skip", ("smaller than one 32-px tile",), _SCENE_TEST),
    BadInput("one-pixel-short", "scene", "a 511 × 511 scene just short of one tile at the flight's tiling", "skip", ("smaller than one 32-px tile",), _SCENE_TEST),
    BadInput("three-bands", "scene", "an RGB picture (3 bands) as SAR scene", "skip", ("3 bands",), _SCENE_TEST),
    BadInput("missing-file", "scene", "asset href to a file that does not exist", "skip", ("not found",), _SCENE_TEST, "missing-file.tif"),
    # -- STAC catalogue (items of flight-corpus, collections of the catalogue) ----------------------
    BadInput("invalid-json", "stac", "item file that is not JSON", "skip", ("cannot read item",), _SCENE_TEST, "invalid-json.json"),
    BadInput("duplicate-item-id", "stac", "two items with the same id in one flight", "skip", ("duplicate scene id",), _SCENE_TEST, "good"),
    BadInput("no-assets", "stac", "item without any asset", "skip", ("no geotiff asset",), _SCENE_TEST),
    BadInput("href-outside-roots", "stac", "asset href to /etc/passwd", "skip", ("allowed_href_roots",), _SCENE_TEST),
    BadInput("href-file-url", "stac", "asset href file:///etc/shadow.tif", "skip", ("allowed_href_roots",), _SCENE_TEST),
    BadInput("href-localhost", "stac", "asset href http://127.0.0.1:9/x.tif", "skip", ("allowed_href_roots",), _SCENE_TEST),
    BadInput("href-dotdot", "stac", "asset href ../../../etc/x.tif escaping the catalogue", "skip", ("allowed_href_roots",), _SCENE_TEST),
    BadInput("dotdot-id", "stac", "item id '..'", "skip", ("not a valid scene id",), _SCENE_TEST, "'..'"),
    BadInput("slash-id", "stac", "item id 'a/../../b'", "skip", ("not a valid scene id",), _SCENE_TEST, "a/../../b"),
    BadInput("empty-id", "stac", "item id ''", "skip", ("not a valid scene id",), _SCENE_TEST, "''"),
    BadInput("long-id", "stac", "item id of 300 characters", "skip", ("not a valid scene id",), _SCENE_TEST, "x" * 300),
    BadInput("bad-datetime", "stac", "datetime 'yesterday'", "skip", ("cannot read item",), _SCENE_TEST, "bad-datetime.json"),
    BadInput("bad-flight-id", "stac", "collection id '../escape'", "skip", ("not a valid flight id",), _FLIGHT_TEST, "../escape"),
    BadInput("duplicate-flight-id", "stac", "two collections with the id flight-corpus", "skip", ("duplicate flight id",), _FLIGHT_TEST, FLIGHT),
    BadInput("invalid-child-json", "stac", "a child catalogue that is not JSON", "skip", ("cannot read child",), _FLIGHT_TEST, "broken-child"),
    # -- optical mosaics (optical_tiles of flight-corpus) -----------------------------------------
    BadInput("optical-not-covering", "optical", "orthophoto 50 km away from the flight", "skip", ("coverage 0.000",), _OPTICAL_TEST, "optical-not-covering.tif"),
    BadInput("optical-other-crs", "optical", "orthophoto in EPSG:4326 (the flight is in UTM 31N)", "handled", (), _OPTICAL_TEST, "optical-other-crs.tif"),
    BadInput("optical-rgba", "optical", "RGBA orthophoto (alpha band)", "handled", (), _OPTICAL_TEST, "optical-rgba.tif"),
    BadInput("optical-palette", "optical", "paletted orthophoto", "error", ("palette",), _OPTICAL_TEST, "optical-palette.tif"),
    # -- run config (sar-pipeline run --config FILE, checked before anything runs; sar_tiles) --------
    BadInput("config-unknown-op", "config", "an op no main job has (typo sar_tile)", "error", ("not part of the main job",), _CONFIG_TEST, "config-unknown-op.yaml"),
    BadInput("config-unknown-field", "config", "an unknown setting (tile_sise)", "error", ("tile_sise",), _CONFIG_TEST, "config-unknown-field.yaml"),
    BadInput("config-negative-lr", "config", "a negative learning rate", "error", ("unet_learning_rate", "greater than or equal to 0"), _CONFIG_TEST, "config-negative-lr.yaml"),
    BadInput("config-reversed-percentiles", "config", "percentile_low above percentile_high", "error", ("must be below percentile_high",), _CONFIG_TEST, "config-reversed-percentiles.yaml"),
    BadInput("config-reversed-db-range", "config", "db_min above db_max", "error", ("must be below db_max",), _CONFIG_TEST, "config-reversed-db-range.yaml"),
    BadInput("config-zero-gsd", "config", "ground_sample_distance_m 0", "error", ("ground_sample_distance_m", "greater than 0"), _CONFIG_TEST, "config-zero-gsd.yaml"),
    BadInput("config-archive-class-command", "config", "archive_class 'os:system' with a shell command as uri", "error", ("not an installed sararchive plug-in",), _CONFIG_TEST, "config-archive-class-command.yaml"),
    BadInput("config-trainer-env", "config", "LD_PRELOAD in the trainer's env", "error", ("ld_preload", "not an allowed variable"), _CONFIG_TEST, "config-trainer-env.yaml"),
    BadInput("config-not-yaml", "config", "a run config that is not YAML", "error", ("not valid yaml",), _CONFIG_TEST, "config-not-yaml.yaml"),
    BadInput("config-gsd-unit-slip", "config", "ground_sample_distance_m 10⁻⁴ (a unit slip): millions of tile positions per scene", "error", ("max_tiles_per_scene",), _TILING_TEST, "good"),
    BadInput("optical-16bit", "optical", "16-bit orthophoto without a value range", "error", ("16",), _OPTICAL_TEST, "optical-16bit.tif"),
)  # fmt: skip


# -- rasters -----------------------------------------------------------------------------------


def _speckle(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Amplitude of 4-look gamma speckle over a mean intensity of 0.05 (float32)."""
    return np.sqrt(np.random.default_rng(seed).gamma(4, 0.05 / 4, size=shape)).astype(np.float32)


def _write(
    path: Path, data: np.ndarray, transform: Affine | None, crs: str | None = CRS, nodata=0.0, **extra
) -> Path:
    """A tiled GeoTIFF (``data`` of shape (rows, cols) or (bands, rows, cols))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = data if data.ndim == 3 else data[None]
    profile = {
        "driver": "GTiff", "height": bands.shape[1], "width": bands.shape[2], "count": bands.shape[0],
        "dtype": bands.dtype.name, "tiled": True, "blockxsize": 64, "blockysize": 64, "compress": "DEFLATE",
    }  # fmt: skip
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    profile.update(extra)
    with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
    return path


def _north_up(x0: float, y0: float, spacing: float = 1.0) -> Affine:
    return Affine(spacing, 0, x0, 0, -spacing, y0)


def _scene_origin(i: int) -> tuple[float, float]:
    """Each scene on its own patch of ground (no overlap with the good scene's)."""
    return ORIGIN[0] + 300.0 * (i % 8), ORIGIN[1] - 300.0 * (i // 8)


def _huge_sparse_header(path: Path, transform: Affine) -> Path:
    """A GeoTIFF header claiming 10⁶ × 10⁶ float32 pixels: sparse (no block written), ~250 KB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "height": 1_000_000, "width": 1_000_000, "count": 1, "dtype": "float32",
        "tiled": True, "blockxsize": 8192, "blockysize": 8192, "sparse_ok": True, "bigtiff": "YES",
        "crs": CRS, "transform": transform, "nodata": 0.0,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile):
        pass
    return path


def _corrupt_blocks(path: Path, seed: int) -> None:
    """Overwrite the second half of a tiled GeoTIFF's bytes (its later blocks) with random bytes."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start:] = np.random.default_rng(seed).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _png_bytes() -> bytes:
    """A real (tiny) PNG: right file, wrong format."""
    import zlib

    raw = b"\x00\x80" * 1
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw[:2]))
        + chunk(b"IEND", b"")
    )


# -- STAC ----------------------------------------------------------------------------------------

_EXTENSIONS = [
    "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
_TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def _footprint(transform: Affine, shape: tuple[int, int]) -> tuple[dict, list[float]]:
    rows, cols = shape
    corners = [transform * p for p in ((0, 0), (cols, 0), (cols, rows), (0, rows))]
    lonlat = [_TO_LONLAT.transform(x, y) for x, y in corners]
    lons, lats = [p[0] for p in lonlat], [p[1] for p in lonlat]
    ring = [list(p) for p in lonlat] + [list(lonlat[0])]
    return {"type": "Polygon", "coordinates": [ring]}, [min(lons), min(lats), max(lons), max(lats)]


def _item(
    item_id: str,
    href: str | None,
    transform: Affine,
    shape: tuple[int, int],
    proj: bool = True,
    unit: str = "amplitude",
    data_type: str = "float32",
    nodata=0.0,
    **properties,
) -> dict:
    """A STAC item as JSON (SAR, projection and raster extensions), its raster at ``href``."""
    geometry, bbox = _footprint(transform, shape)
    props = {
        "datetime": WHEN, "platform": "corpus-sar", "sar:instrument_mode": "SM", "sar:frequency_band": "X",
        "sar:polarizations": ["VV"], "sar:product_type": "GEC", "sar:observation_direction": "right",
        "sar_pipeline:heading_deg": 0.0,
    }  # fmt: skip
    if proj:
        props.update({"proj:code": CRS, "proj:transform": list(transform)[:6], "proj:shape": list(shape)})
    props.update(properties)
    assets = {}
    if href is not None:
        band = {"data_type": data_type, "unit": unit}
        if nodata is not None:
            band["nodata"] = nodata
        assets["data"] = {
            "href": href, "type": "image/tiff; application=geotiff", "roles": ["data"], "raster:bands": [band],
        }  # fmt: skip
    return {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": _EXTENSIONS, "id": item_id,
        "geometry": geometry, "bbox": bbox, "properties": props, "assets": assets, "links": [],
    }  # fmt: skip


def _collection(collection_id: str, item_files: list[str]) -> dict:
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": collection_id, "description": "corpus flight",
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [[3.2, 43.4, 3.3, 43.5]]}, "temporal": {"interval": [[WHEN, WHEN]]}},
        "links": [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}]
        + [{"rel": "item", "href": f"./{f}", "type": "application/geo+json"} for f in item_files],
    }  # fmt: skip


def _dump(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


@dataclasses.dataclass
class Corpus:
    """Where :func:`write_corpus` put everything."""

    root: Path
    catalog: Path
    #: kind → its file (rasters, mosaics, caption sets, model folders, configs)
    files: dict[str, Path]
    #: the scene ids of the good scenes of flight-corpus
    good_scenes: tuple[str, ...] = ("good",)


def write_scenes(root: Path) -> tuple[Path, dict[str, Path]]:
    """The catalogue with ``flight-corpus`` (the good scene + one item per scene/STAC kind) and the
    flight-level bad collections; returns the catalogue and kind → file."""
    scenes = root / "scenes"
    flight_dir = root / FLIGHT
    files: dict[str, Path] = {}
    items: dict[str, dict] = {}  # file name → item JSON (or raw text)

    def scene_item(kind: str, i: int, data: np.ndarray, spacing: float = 1.0, proj: bool = True, **kw):
        x0, y0 = _scene_origin(i)
        t = _north_up(x0, y0, spacing)
        path = files[kind] = _write(scenes / f"{kind}.tif", data, t, **kw.pop("raster", {}))
        items[f"{kind}.json"] = _item(kind, f"../scenes/{kind}.tif", t, data.shape[-2:], proj=proj, **kw)
        return path, t

    good, good_t = scene_item("good", 0, _speckle(GOOD_SHAPE, 0))
    small = (64, 64)
    i = iter(range(1, 100))

    # broken files
    truncated, t = scene_item("truncated", next(i), _speckle((192, 192), 1))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    corrupt, _ = scene_item("corrupt-blocks", next(i), _speckle((192, 192), 2))
    _corrupt_blocks(corrupt, 2)
    for kind, content in (("wrong-magic", _png_bytes()), ("text-as-tiff", b"this is not a GeoTIFF\n" * 4)):
        files[kind] = scenes / f"{kind}.tif"
        files[kind].write_bytes(content)
        items[f"{kind}.json"] = _item(
            kind, f"../scenes/{kind}.tif", _north_up(*_scene_origin(next(i))), small, proj=False
        )
    x0, y0 = _scene_origin(next(i))
    files["huge-header"] = _huge_sparse_header(scenes / "huge-header.tif", _north_up(x0, y0))
    items["huge-header.json"] = _item(
        "huge-header", "../scenes/huge-header.tif", _north_up(x0, y0), small, proj=False
    )
    scene_item("huge-record", next(i), _speckle(small, 3), spacing=0.001)
    items["huge-record.json"]["properties"]["proj:shape"] = [5_000_000, 5_000_000]
    # georeferencing
    scene_item("no-crs", next(i), _speckle(small, 4), proj=False, raster={"crs": None})
    scene_item("degenerate-transform", next(i), _speckle(small, 5))
    items["degenerate-transform.json"]["properties"]["proj:transform"] = [0.0, 0.0, x0, 0.0, 0.0, y0]
    x0, y0 = _scene_origin(next(i))
    files["non-invertible-transform"] = _write(
        scenes / "non-invertible-transform.tif", _speckle(small, 6), Affine(1.0, 2.0, x0, 0.5, 1.0, y0)
    )
    items["non-invertible-transform.json"] = _item(
        "non-invertible-transform",
        "../scenes/non-invertible-transform.tif",
        _north_up(x0, y0),
        small,
        proj=False,
    )
    scene_item("unknown-epsg", next(i), _speckle(small, 7))
    items["unknown-epsg.json"]["properties"]["proj:code"] = "EPSG:999999"
    # values
    for kind, value in (("nan-amplitude", np.nan), ("inf-amplitude", np.inf)):
        data = _speckle((128, 128), 8)
        data[np.random.default_rng(8).random(data.shape) < 0.01] = value
        scene_item(kind, next(i), data)
    scene_item("negative-amplitude", next(i), -_speckle((128, 128), 9))
    scene_item("all-nodata", next(i), np.zeros((128, 128), np.float32))
    slc = _speckle((128, 128), 10) * np.exp(
        1j * np.random.default_rng(10).uniform(0, 2 * math.pi, (128, 128))
    )
    scene_item("complex-as-amplitude", next(i), slc.astype(np.complex64), unit="amplitude")
    scene_item("amplitude-as-complex", next(i), _speckle((128, 128), 11), unit="complex", data_type="cfloat32",
               **{"sar:product_type": "SLC"})  # fmt: skip
    # sizes and bands
    scene_item("one-pixel", next(i), np.full((1, 1), 0.2, np.float32))
    # 511 px at 0.1 m = 51.1 m: 25.6 px at the 2 m GSD, short of the 32-px tile by more than the
    # padding max_nodata_fraction allows (a scene 31 px wide gives one tile, 6 % padding)
    scene_item("one-pixel-short", next(i), _speckle((511, 511), 12), spacing=0.1)
    rgb = np.random.default_rng(13).integers(1, 255, (3, 64, 64)).astype(np.uint8)
    scene_item("three-bands", next(i), rgb, unit="amplitude", data_type="uint8", nodata=None)
    items["missing-file.json"] = _item(
        "missing-file", "../scenes/missing-file.tif", _north_up(*_scene_origin(next(i))), small
    )

    # STAC items
    items["invalid-json.json"] = '{"type": "Feature", "id": "invalid-json", '  # cut short
    duplicate = json.loads(json.dumps(items["good.json"]))
    items["duplicate-item-id.json"] = duplicate  # id "good" again
    items["no-assets.json"] = _item("no-assets", None, good_t, GOOD_SHAPE)
    for kind, href in (
        ("href-outside-roots", "/etc/passwd"),
        ("href-file-url", "file:///etc/shadow.tif"),
        ("href-localhost", "http://127.0.0.1:9/x.tif"),
        ("href-dotdot", "../../../../../../etc/x.tif"),
    ):
        items[f"{kind}.json"] = _item(kind, href, good_t, GOOD_SHAPE)
    for kind, item_id in (
        ("dotdot-id", ".."),
        ("slash-id", "a/../../b"),
        ("empty-id", ""),
        ("long-id", "x" * 300),
    ):
        items[f"{kind}.json"] = dict(_item(item_id, "../scenes/good.tif", good_t, GOOD_SHAPE))
    items["bad-datetime.json"] = _item(
        "bad-datetime", "../scenes/good.tif", good_t, GOOD_SHAPE, datetime="yesterday"
    )
    for name, item in items.items():
        if isinstance(item, str):
            (flight_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (flight_dir / name).write_text(item)
        else:
            item["links"] = [
                {"rel": "root", "href": "../catalog.json"}, {"rel": "collection", "href": "./collection.json"},
                {"rel": "parent", "href": "./collection.json"},
            ]  # fmt: skip
            _dump(flight_dir / name, item)
        files.setdefault(name.removesuffix(".json"), flight_dir / name)
    _dump(flight_dir / "collection.json", _collection(FLIGHT, sorted(items)))

    # flight-level kinds: collections with a bad id, a duplicate flight id, an unreadable child
    other = _item("other-good", "../scenes/good.tif", good_t, GOOD_SHAPE)
    other["links"] = [
        {"rel": "root", "href": "../catalog.json"},
        {"rel": "parent", "href": "./collection.json"},
    ]
    for folder, collection_id in (("bad-flight-id", "../escape"), ("duplicate-flight-id", FLIGHT)):
        _dump(root / folder / "other-good.json", other)
        _dump(root / folder / "collection.json", _collection(collection_id, ["other-good.json"]))
        files[folder] = root / folder / "collection.json"
    (root / "broken-child").mkdir(parents=True, exist_ok=True)
    (root / "broken-child" / "catalog.json").write_text("{ not json")
    files["invalid-child-json"] = root / "broken-child" / "catalog.json"
    catalog = {
        "type": "Catalog", "stac_version": "1.0.0", "id": "bad-input-corpus", "description": "issue 13",
        "links": [{"rel": "root", "href": "./catalog.json"}]
        + [{"rel": "child", "href": f"./{d}/{n}"} for d, n in (
            (FLIGHT, "collection.json"), ("bad-flight-id", "collection.json"),
            ("duplicate-flight-id", "collection.json"), ("broken-child", "catalog.json"))],
    }  # fmt: skip
    _dump(root / "catalog.json", catalog)
    return root / "catalog.json", files


def write_optical(root: Path) -> dict[str, Path]:
    """The good orthophoto (covering flight-corpus's good scene) and the bad ones."""
    folder = root / "optical"
    files: dict[str, Path] = {}
    rng = np.random.default_rng(20)
    x0, y0 = ORIGIN[0] - 100, ORIGIN[1] + 100
    t = _north_up(x0, y0, 1.0)
    rgb = rng.integers(0, 255, (3, 400, 400)).astype(np.uint8)
    files["optical-good"] = _write(folder / "optical-good.tif", rgb, t, nodata=None, photometric="RGB")
    files["optical-not-covering"] = _write(
        folder / "optical-not-covering.tif", rgb, _north_up(x0 + 50_000, y0), nodata=None
    )
    # the same ground in geographic coordinates
    lon0, lat1 = _TO_LONLAT.transform(x0, y0)
    lon1, lat0 = _TO_LONLAT.transform(x0 + 400, y0 - 400)
    step = max(lon1 - lon0, lat1 - lat0) / 400
    files["optical-other-crs"] = _write(
        folder / "optical-other-crs.tif",
        rgb,
        Affine(step, 0, lon0, 0, -step, lat1),
        crs="EPSG:4326",
        nodata=None,
    )
    alpha = np.full((1, 400, 400), 255, np.uint8)
    files["optical-rgba"] = _write(folder / "optical-rgba.tif", np.concatenate([rgb, alpha]), t, nodata=None,
                                   photometric="RGB", alpha="YES")  # fmt: skip
    palette = folder / "optical-palette.tif"
    _write(palette, rgb[0] % 4, t, nodata=None)
    with rasterio.open(palette, "r+") as ds:
        ds.write_colormap(
            1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)}
        )
    files["optical-palette"] = palette
    files["optical-16bit"] = _write(folder / "optical-16bit.tif", rgb.astype(np.uint16) * 200, t, nodata=None)
    return files


#: sar-pipeline run --config files (the pwned file must never appear: nothing may run the uri)
CONFIGS = {
    "config-unknown-op": {"ops": {"sar_tile": {"config": {"tile_size": 256}}}},
    "config-unknown-field": {"ops": {"sar_tiles": {"config": {"tile_sise": 256}}}},
    "config-negative-lr": {"ops": {"sd_model": {"config": {"unet_learning_rate": -1e-5}}}},
    "config-reversed-percentiles": {"ops": {"training_dataset": {"config": {"percentile_low": 99.0, "percentile_high": 1.0}}}},
    "config-reversed-db-range": {"ops": {"training_dataset": {"config": {"db_min": 10.0, "db_max": -30.0}}}},
    "config-zero-gsd": {"ops": {"sar_tiles": {"config": {"ground_sample_distance_m": 0}}}},
    "config-archive-class-command": {"resources": {"archive": {"config": {"archive_class": "os:system", "uri": "touch {pwned}"}}}},
    "config-trainer-env": {"resources": {"sd_trainer": {"config": {"env": {"LD_PRELOAD": "/tmp/x.so"}}}}},
}  # fmt: skip


def write_configs(root: Path) -> dict[str, Path]:
    """The run-config files; ``pwned`` in a command stands for a file nothing may create."""
    import yaml

    folder = root / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind, config in CONFIGS.items():
        text = yaml.safe_dump(config).replace("{pwned}", str(root / "pwned"))
        files[kind] = folder / f"{kind}.yaml"
        files[kind].write_text(text)
    files["config-not-yaml"] = folder / "config-not-yaml.yaml"
    files["config-not-yaml"].write_text("ops: [unclosed\n  sar_tiles: {")
    return files


def write_corpus(root: Path) -> Corpus:
    """Write every bad input (and the good ones beside them) under ``root``."""
    root = Path(root)
    catalog, files = write_scenes(root)
    files.update(write_optical(root))
    files.update(write_configs(root))
    return Corpus(root, catalog, files)


def reliability_table() -> str:
    """docs/reliability.md's bad-input table, from :data:`KINDS`."""
    lines = ["| input | kind | stage | outcome | the message says | test |", "|---|---|---|---|---|---|"]
    for k in KINDS:
        said = ", ".join(f"“{r}”" for r in k.reason) or "–"
        lines.append(f"| {k.description} | `{k.kind}` | {k.stage} | {k.outcome} | {said} | `{k.test}` |")
    return "\n".join(lines)


DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
TABLE_START = (
    "<!-- bad-input table: written by `python sar_pipeline_tests/reliability/corpus.py --doc` from KINDS -->"
)
TABLE_END = "<!-- end of the bad-input table -->"


def doc_with_table(text: str) -> str:
    """``text`` (docs/reliability.md) with the table between its markers replaced by :func:`reliability_table`."""
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return text[:start] + "\n" + reliability_table() + "\n" + text[end:]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python sar_pipeline_tests/reliability/corpus.py DIR | --doc")
    if sys.argv[1] == "--doc":
        DOC.write_text(doc_with_table(DOC.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"rewrote the bad-input table of {DOC} ({len(KINDS)} kinds)")
    else:
        corpus = write_corpus(Path(sys.argv[1]))
        print(f"wrote {len(corpus.files)} inputs under {corpus.root}")
