"""The training dataset's Parquet schema: one row per SAR tile, readable by three kinds of tools.

* Hugging Face ``datasets``: image columns use its ``Image`` layout (``struct<bytes, path>``) and the
  schema metadata key ``huggingface`` declares them as ``{"_type": "Image"}``, so
  ``datasets.load_dataset("parquet", data_files=…)`` yields PIL images.
* GeoParquet readers (geopandas, GDAL, DuckDB): ``geometry`` is the tile footprint in WKB, WGS84
  (lon, lat), declared in the schema metadata key ``geo`` (GeoParquet 1.1.0).
* plain ``pyarrow.parquet.read_table``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pyarrow as pa
import shapely
from pyproj import CRS

#: bumped when a column is added, renamed or changes meaning (it enters the dataset version hash)
SCHEMA_VERSION = "3"

SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Hugging Face ``datasets`` Image storage: encoded image bytes (PNG) and a file name
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

#: columns stored in the ``IMAGE_TYPE`` layout
IMAGE_COLUMNS: tuple[str, ...] = ("image", "optical_image", "landcover_image", "idealised_image")

#: image columns holding backscatter in dB, quantised into the dataset's one range (db_min/db_max)
BACKSCATTER_COLUMNS: tuple[str, ...] = ("image", "idealised_image")

GEOMETRY_COLUMN = "geometry"

_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("tile_id", pa.string(), "tile identifier, unique over the dataset"),
    ("flight_id", pa.string(), "flight (campaign) the tile comes from"),
    ("scene_id", pa.string(), "SAR scene the tile was cut from"),
    ("tile_row", pa.int32(), "tile row index within its scene grid"),
    ("tile_col", pa.int32(), "tile column index within its scene grid"),
    ("split", pa.string(), "train, validation or test (spatially blocked)"),
    ("text", pa.string(), "conditioning text: activation token + caption (+ acquisition words)"),
    ("caption", pa.string(), "caption alone, as the captioner wrote it"),
    ("captioner_id", pa.string(), "which captioner wrote the caption"),
    ("captioner_version", pa.string(), "captioner version or checkpoint hash"),
    ("caption_score", pa.float64(), "captioner score if it gives one"),
    ("image", IMAGE_TYPE, "SAR tile, 8- or 16-bit PNG of dB over db_min…db_max, native SAR orientation"),
    ("optical_image", IMAGE_TYPE, "co-located optical tile on the SAR tile's grid (PNG)"),
    ("optical_coverage_fraction", pa.float64(), "share of the tile covered by optical data, 0..1"),
    ("optical_time_gap_s", pa.float64(), "optical minus SAR acquisition time, seconds"),
    ("landcover_image", IMAGE_TYPE, "land-cover class codes on the tile grid (PNG, uint8)"),
    ("idealised_image", IMAGE_TYPE, "idealised (physically simulated) SAR tile (PNG)"),
    (GEOMETRY_COLUMN, pa.binary(), "tile footprint, WKB, WGS84 lon/lat"),
    ("footprint_scene_crs", pa.binary(), "tile footprint, WKB, in the scene CRS"),
    (
        "crs",
        pa.string(),
        "projected CRS (EPSG code or WKT2) of transform and footprint_scene_crs: the "
        "scene's, or the one it was gridded in (UTM zone of a geographic scene)",
    ),
    ("transform", pa.list_(pa.float64()), "tile affine a,b,c,d,e,f: pixel corner → scene CRS"),
    ("ground_sample_distance_m", pa.float64(), "ground pixel size, metres"),
    ("acquisition_datetime", pa.timestamp("us", tz="UTC"), "SAR acquisition time, UTC"),
    ("platform", pa.string(), "platform (aircraft / satellite) name"),
    ("frequency_band", pa.string(), "radar band (X, C, L, P…)"),
    ("polarizations", pa.list_(pa.string()), "polarisations, e.g. [HH]"),
    ("incidence_angle_deg", pa.float64(), "incidence angle at the scene centre, degrees"),
    ("heading_deg", pa.float64(), "platform heading, degrees clockwise from grid north"),
    ("observation_direction", pa.string(), "look direction: left or right"),
    ("value_unit", pa.string(), "what the image levels are linear in: db, or amplitude (normalisation)"),
    (
        "normalisation",
        pa.string(),
        "how backscatter became levels, the same for every row: 'db' (linear in dB over db_min…db_max) "
        "or 'amplitude' (A / amplitude_scale clipped to [0, 1]); sar_pipeline.radiometry.to_db inverts both",
    ),
    (
        "db_min",
        pa.float64(),
        "backscatter (dB) at or below which pixels have value 1, the same for every row (0 = nodata); "
        "'amplitude': the dB of half a level",
    ),
    ("db_max", pa.float64(), "backscatter (dB) mapped to the top pixel value, the same for every row"),
    ("bit_depth", pa.int32(), "bits per pixel of the SAR image (8 or 16)"),
    (
        "amplitude_scale",
        pa.float64(),
        "'amplitude' normalisation: the amplitude mapped to the top value, amplitude_mean + 3 amplitude_std "
        "(null for 'db')",
    ),
    (
        "amplitude_mean",
        pa.float64(),
        "'amplitude' normalisation: mean amplitude (sqrt of intensity) of the valid pixels pooled over "
        "every tile of the dataset",
    ),
    ("amplitude_std", pa.float64(), "'amplitude' normalisation: standard deviation of those amplitudes"),
    ("nodata_fraction", pa.float64(), "share of the tile's pixels without data (value 0)"),
    (
        "clipped_low_fraction",
        pa.float64(),
        "share of the tile's valid pixels below db_min (drawn at level 1)",
    ),
    (
        "clipped_high_fraction",
        pa.float64(),
        "share of the tile's valid pixels above db_max (drawn at the top level)",
    ),
]

COLUMN_DESCRIPTIONS: dict[str, str] = {name: doc for name, _, doc in _FIELDS}

#: the schema without file-level metadata (every field nullable, as Hugging Face expects)
BASE_SCHEMA = pa.schema([pa.field(name, typ, nullable=True) for name, typ, _ in _FIELDS])

# GeoParquet 1.1 recommends OGC:CRS84 (WGS84 with lon/lat axis order) as PROJJSON.
_CRS84_PROJJSON = CRS.from_user_input("OGC:CRS84").to_json_dict()


def huggingface_metadata() -> bytes:
    """The ``huggingface`` schema-metadata value declaring the image columns as ``Image``.

    Only the image columns are declared: ``datasets`` infers the others from the Arrow types, and
    keeping them out avoids depending on one ``datasets`` release's names for list features.
    """
    features = {name: {"_type": "Image"} for name in IMAGE_COLUMNS}
    return json.dumps({"info": {"features": features}}, sort_keys=True).encode()


def geo_metadata(geometries_wkb: Iterable[bytes | None]) -> bytes:
    """The ``geo`` schema-metadata value (GeoParquet 1.1.0) for the given WKB footprints.

    ``bbox`` is (min lon, min lat, max lon, max lat) over the non-null geometries; an empty file
    gets no bbox and no geometry types.
    """
    wkbs = [g for g in geometries_wkb if g is not None]
    column: dict = {"encoding": "WKB", "crs": _CRS84_PROJJSON, "edges": "planar"}
    if wkbs:
        geoms = shapely.from_wkb(wkbs)
        column["geometry_types"] = sorted({g.geom_type for g in geoms})
        bounds = shapely.bounds(geoms)
        column["bbox"] = [
            float(bounds[:, 0].min()),
            float(bounds[:, 1].min()),
            float(bounds[:, 2].max()),
            float(bounds[:, 3].max()),
        ]
    else:
        column["geometry_types"] = []
    meta = {"version": "1.1.0", "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}
    return json.dumps(meta, sort_keys=True).encode()


def dataset_schema(geometries_wkb: Iterable[bytes | None] = ()) -> pa.Schema:
    """The full file schema: :data:`BASE_SCHEMA` plus the ``huggingface`` and ``geo`` metadata."""
    return BASE_SCHEMA.with_metadata(
        {b"huggingface": huggingface_metadata(), b"geo": geo_metadata(geometries_wkb)}
    )
