"""Real-format SAR products as real archives ship them, for the tests of issue 8 (TorchGeo style).

``python sar_pipeline_tests/products/make_products.py DIR`` writes them (what the tests read, to
look at); the tests call :func:`write_products` into a temporary folder. Everything is derived from
one simulated ground near Montpellier (UTM 31N) and one native-geometry acquisition of it, so
products of the same ground can be compared pixel for pixel:

=======================  =============================================================================
``native/``              float32 amplitude, native SAR geometry (rotated geotransform: heading 35°,
                         right-looking, range along columns), nodata 0, unit ``amplitude``, heading in
                         ``sar_pipeline:heading_deg`` — the reference.
``geocoded/``            the same acquisition warped north-up (0.5 m, nearest: known rotation), nodata 0
                         outside the swath, heading from ``view:azimuth`` (the look direction, 125°) and
                         ``sar:observation_direction``.
``dn/``                  an uncalibrated 8-bit product: north-up 1 m amplitude × gain as uint8 DN (the
                         brightest pixels, under 1 %, saturate at 255), a quarter of the pixels DN 0 outside the swath,
                         no nodata declared, unit ``amplitude (DN)``, heading from ``view:azimuth``.
``db/``                  float32 dB, north-up 2 m, nodata -9999 declared, unit ``dB``, heading only from
                         ``sat:orbit_state`` (a descending pass of another, simulated, native scene).
``geographic/``          linear sigma0 on an EPSG:4326 grid (0.00001°), unit ``sigma0``, no heading at all.
``truncated/``           the native product cut in half: its later pixel blocks cannot be decoded.
``small/``               a 150 × 120 m scene: smaller than one 512-px tile at 1 m.
``worldcover.tif``       a WorldCover-like 10 m land-cover COG in EPSG:4326 (1/12000°, uint8 class values
                         10…100 with the WorldCover palette) covering the ground: class values agree with
                         the simulated ground.
``catalog.json``         a STAC catalogue: one flight (Collection, ``flight-<product>/``) per product, Items
                         with the SAR, view, sat, projection and raster extensions as real catalogues fill them.
=======================  =============================================================================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sys
from pathlib import Path

import numpy as np
import pystac
import rasterio
import rasterio.warp
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.enums import Resampling

CRS = "EPSG:32631"
HEADING_DEG = 35.0
LOOK = "right"
#: the GSD the native and geocoded products are compared at; the native raster's origin lies on the
#: lattice of its axes at this spacing, as rotated grids' origins do
COMPARE_GSD_M = 4.0
NATIVE_SHAPE = (500, 600)  # rows (azimuth), cols (range)
WHEN = dt.datetime(2024, 6, 1, 10, 30, tzinfo=dt.UTC)
WORLDCOVER_STEP_DEG = 1 / 12000  # ESA WorldCover's pixel (≈ 10 m)

# ground classes (WorldCover values) and their sigma0 (dB, X-band)
TREES, CROPLAND, BUILT_UP, WATER = 10, 40, 50, 80
SIGMA0_DB = {TREES: -8.0, CROPLAND: -12.0, BUILT_UP: 2.0, WATER: -24.0}
WORLDCOVER_COLORMAP = {
    10: (0, 100, 0), 20: (255, 187, 34), 30: (255, 255, 76), 40: (240, 150, 255), 50: (250, 0, 0),
    60: (180, 180, 180), 70: (240, 240, 240), 80: (0, 100, 200), 90: (0, 150, 160), 95: (0, 207, 117),
    100: (250, 230, 160),
}  # fmt: skip


def _unit(deg: float) -> np.ndarray:
    return np.array([math.sin(math.radians(deg)), math.cos(math.radians(deg))])


def native_axes(heading_deg: float = HEADING_DEG, look: str = LOOK) -> tuple[np.ndarray, np.ndarray]:
    """Unit map vectors of range (look direction) and azimuth (heading) of a native raster."""
    look_vec = _unit(heading_deg + (90 if look == "right" else -90))
    return look_vec, _unit(heading_deg)


def native_transform(spacing_m: float = 1.0, heading_deg: float = HEADING_DEG) -> Affine:
    """The native raster's affine: columns along the look direction, rows along the heading, origin on
    the :data:`COMPARE_GSD_M` lattice of those axes near (520 000, 4 810 000)."""
    col_hat, row_hat = native_axes(heading_deg)
    target = np.array([520_000.0, 4_810_000.0])
    k, m = round(target @ col_hat / COMPARE_GSD_M), round(target @ row_hat / COMPARE_GSD_M)
    origin = (k * col_hat + m * row_hat) * COMPARE_GSD_M
    col, row = col_hat * spacing_m, row_hat * spacing_m
    return Affine(col[0], row[0], origin[0], col[1], row[1], origin[1])


def ground_class(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """WorldCover class of map points (UTM 31N metres): a river, a wood, a built-up block, fields.

    Laid out in the native acquisition's frame (``a`` metres along range, ``b`` along the heading from
    near (520 000, 4 810 000)), so every class lies inside the native scene's swath.
    """
    col_hat, row_hat = native_axes()
    u, v = np.asarray(x) - 520_000.0, np.asarray(y) - 4_810_000.0
    a, b = u * col_hat[0] + v * col_hat[1], u * row_hat[0] + v * row_hat[1]
    classes = np.full(np.shape(a), CROPLAND, dtype=np.uint8)
    classes[(a > 400) & (b > 60)] = TREES
    classes[(a > 60) & (a < 200) & (b > 300) & (b < 440)] = BUILT_UP
    classes[np.abs(a - 0.6 * b - 230.0) < 22.0] = WATER  # a river crossing the swath
    return classes


def ground_sigma0(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear sigma0 of the ground (no speckle): per class, fields varying parcel by parcel."""
    classes = ground_class(x, y)
    db = np.zeros(np.shape(x), dtype=np.float64)
    for value, level in SIGMA0_DB.items():
        db[classes == value] = level
    parcels = (np.floor((x - 519_000) / 60) + 3 * np.floor((y - 4_809_000) / 60)) % 4
    db = np.where(classes == CROPLAND, db + 1.5 * parcels - 2.0, db)
    return 10 ** (db / 10)


def simulate_native(
    seed: int = 0, heading_deg: float = HEADING_DEG, looks: int = 4
) -> tuple[np.ndarray, Affine]:
    """Amplitude (float32) of a native acquisition: ground sigma0 times gamma speckle of ``looks`` looks,
    the last 40 range columns beyond the swath (0 = nodata)."""
    t = native_transform(heading_deg=heading_deg)
    rows, cols = NATIVE_SHAPE
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    x, y = t * (cc, rr)
    sigma0 = ground_sigma0(x, y)
    speckle = np.random.default_rng(seed).gamma(looks, 1.0 / looks, size=sigma0.shape)
    amplitude = np.sqrt(sigma0 * speckle).astype(np.float32)
    amplitude[:, -40:] = 0.0
    return amplitude, t


def north_up_grid(
    src_transform: Affine, src_shape: tuple[int, int], pixel_m: float
) -> tuple[Affine, tuple[int, int]]:
    """A north-up grid of ``pixel_m`` covering a raster's footprint."""
    rows, cols = src_shape
    corners = np.array([src_transform * p for p in ((0, 0), (cols, 0), (cols, rows), (0, rows))])
    x0, y1 = math.floor(corners[:, 0].min()), math.ceil(corners[:, 1].max())
    x1, y0 = math.ceil(corners[:, 0].max()), math.floor(corners[:, 1].min())
    shape = (int(math.ceil((y1 - y0) / pixel_m)), int(math.ceil((x1 - x0) / pixel_m)))
    return Affine(pixel_m, 0, x0, 0, -pixel_m, y1), shape


def warp(
    array: np.ndarray, src_transform: Affine, dst_transform: Affine, dst_shape, dst_crs: str = CRS, nodata=0.0
) -> np.ndarray:
    """``array`` (in :data:`CRS`) warped onto another grid by nearest neighbour (each output pixel is
    one source pixel), ``nodata`` outside."""
    out = np.full(dst_shape, nodata, dtype=array.dtype)
    rasterio.warp.reproject(
        array, out, src_transform=src_transform, src_crs=CRS, src_nodata=nodata,
        dst_transform=dst_transform, dst_crs=dst_crs, dst_nodata=nodata, resampling=Resampling.nearest,
    )  # fmt: skip
    return out


def write_geotiff(
    path: Path,
    array: np.ndarray,
    transform: Affine,
    crs: str = CRS,
    nodata=None,
    cog: bool = True,
    colormap: dict | None = None,
    **extra,
) -> Path:
    """A single-band GeoTIFF: a COG (DEFLATE, 256² tiles, overviews) or a plain tiled GTiff."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "COG" if cog else "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1,
        "dtype": array.dtype.name, "crs": crs, "transform": transform, "nodata": nodata, "compress": "DEFLATE",
    }  # fmt: skip
    profile.update({"blocksize": 256} if cog else {"tiled": True, "blockxsize": 128, "blockysize": 128})
    profile.update(extra)
    with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
        if colormap:
            dst.write_colormap(1, colormap)
    return path


@dataclasses.dataclass
class Products:
    """Where :func:`write_products` put everything."""

    root: Path
    catalog: Path
    worldcover: Path
    scenes: dict[str, Path]  # product name → its raster
    native_transform: Affine
    native_amplitude: np.ndarray


def _item(
    name: str, raster: Path, unit: str | None, properties: dict, nodata=None, data_type: str = "float32"
) -> pystac.Item:
    with rasterio.open(raster) as ds:
        bounds = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        epsg, transform, shape = ds.crs.to_epsg(), list(ds.transform)[:6], [ds.height, ds.width]
    lon0, lat0, lon1, lat1 = bounds
    item = pystac.Item(
        id=name,
        geometry={
            "type": "Polygon",
            "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
        },
        bbox=list(bounds),
        datetime=WHEN,
        properties={
            "platform": "test-sar",
            "sar:instrument_mode": "SM",
            "sar:frequency_band": "X",
            "sar:polarizations": ["VV"],
            "sar:product_type": "GEC" if name != "native" else "SLC-detected",
            "proj:code": f"EPSG:{epsg}",
            "proj:transform": transform,
            "proj:shape": shape,
            **properties,
        },
        stac_extensions=[
            "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
            "https://stac-extensions.github.io/view/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
    )
    band = {"data_type": data_type}
    if unit is not None:
        band["unit"] = unit
    if nodata is not None:
        band["nodata"] = nodata
    asset = pystac.Asset(href=str(raster), media_type=pystac.MediaType.COG, roles=["data"])
    asset.extra_fields["raster:bands"] = [band]
    item.add_asset("data", asset)
    return item


def write_products(root: Path, seed: int = 0) -> Products:
    """Write every product, the WorldCover-like land cover and the STAC catalogue under ``root``."""
    root = Path(root)
    amplitude, t = simulate_native(seed)
    scenes: dict[str, Path] = {}
    scenes["native"] = write_geotiff(root / "native" / "native.tif", amplitude, t, nodata=0.0)

    geo_t, geo_shape = north_up_grid(t, NATIVE_SHAPE, 0.5)
    scenes["geocoded"] = write_geotiff(
        root / "geocoded" / "geocoded.tif", warp(amplitude, t, geo_t, geo_shape), geo_t, nodata=0.0
    )

    dn_t, dn_shape = north_up_grid(t, NATIVE_SHAPE, 1.0)
    dn_amp = warp(amplitude, t, dn_t, dn_shape)
    gain = 255 / 3.0  # uncalibrated: the brightest speckle of the built-up block saturates at DN 255
    dn = np.clip(np.rint(dn_amp * gain), 0, 255).astype(np.uint8)
    dn[(dn == 0) & (dn_amp > 0)] = 1
    scenes["dn"] = write_geotiff(root / "dn" / "dn.tif", dn, dn_t, nodata=None)

    desc_heading = 194.3  # a descending sun-synchronous pass at 43.4° N
    desc_amp, desc_t = simulate_native(seed + 1, heading_deg=desc_heading)
    db_t, db_shape = north_up_grid(desc_t, NATIVE_SHAPE, 2.0)
    desc_db = np.where(desc_amp > 0, 20 * np.log10(np.maximum(desc_amp, 1e-12)), -9999.0).astype(np.float32)
    scenes["db"] = write_geotiff(
        root / "db" / "db.tif", warp(desc_db, desc_t, db_t, db_shape, nodata=-9999.0), db_t, nodata=-9999.0
    )

    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    lon0, lat1 = to_lonlat.transform(519_900.0, 4_810_500.0)
    step = 0.00001
    geo4326_t = Affine(step, 0, round(lon0, 5), 0, -step, round(lat1, 5))
    sigma0 = (amplitude.astype(np.float64) ** 2).astype(np.float32)
    scenes["geographic"] = write_geotiff(
        root / "geographic" / "geographic.tif",
        warp(sigma0, t, geo4326_t, (450, 600), dst_crs="EPSG:4326"),
        geo4326_t,
        crs="EPSG:4326",
        nodata=0.0,
    )

    truncated = write_geotiff(root / "truncated" / "truncated.tif", amplitude, t, nodata=0.0, cog=False)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    scenes["truncated"] = truncated

    small_t = Affine(1.0, 0, 520_100.0, 0, -1.0, 4_810_150.0)
    small = np.sqrt(
        ground_sigma0(*(small_t * np.meshgrid(np.arange(120) + 0.5, np.arange(150) + 0.5)))
    ).astype(np.float32)
    scenes["small"] = write_geotiff(root / "small" / "small.tif", small, small_t, nodata=0.0)

    worldcover = write_worldcover(root / "worldcover.tif")
    catalog = write_catalogue(root, scenes, desc_heading)
    return Products(root, catalog, worldcover, scenes, t, amplitude)


def write_worldcover(path: Path) -> Path:
    """A WorldCover-like COG: EPSG:4326 at 1/12000°, uint8 class values, the WorldCover palette."""
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    lon0, lat1 = to_lonlat.transform(519_000.0, 4_811_500.0)
    lon1, lat0 = to_lonlat.transform(521_500.0, 4_809_000.0)
    col0, row0 = math.floor(lon0 / WORLDCOVER_STEP_DEG), math.floor(-lat1 / WORLDCOVER_STEP_DEG)
    cols = math.ceil(lon1 / WORLDCOVER_STEP_DEG) - col0
    rows = math.ceil(-lat0 / WORLDCOVER_STEP_DEG) - row0
    t = Affine(
        WORLDCOVER_STEP_DEG,
        0,
        col0 * WORLDCOVER_STEP_DEG,
        0,
        -WORLDCOVER_STEP_DEG,
        -row0 * WORLDCOVER_STEP_DEG,
    )
    lon, lat = t * np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    x, y = to_utm.transform(lon, lat)
    classes = ground_class(np.asarray(x), np.asarray(y))
    colormap = {k: (*v, 255) for k, v in WORLDCOVER_COLORMAP.items()}
    return write_geotiff(
        path, classes, t, crs="EPSG:4326", nodata=0, colormap=colormap, overview_resampling="NEAREST"
    )


def true_bearing(grid_bearing_deg: float, x: float = 520_000.0, y: float = 4_810_000.0) -> float:
    """The true-north bearing of a UTM 31N grid bearing at (x, y): what ``view:azimuth`` records."""
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    step = 1.0 * _unit(grid_bearing_deg)
    (lon0, lon1), (lat0, lat1) = to_lonlat.transform([x, x + step[0]], [y, y + step[1]])
    return Geod(ellps="WGS84").inv(lon0, lat0, lon1, lat1)[0] % 360.0


def write_catalogue(root: Path, scenes: dict[str, Path], desc_heading: float) -> Path:
    """One flight (STAC Collection) per product, its scene an Item filled as real catalogues fill them."""
    common = {"sar:observation_direction": LOOK}

    def look_azimuth(raster: Path) -> float:
        """view:azimuth: the true bearing, at the raster's centre, of the look direction (grid 125°)."""
        with rasterio.open(raster) as ds:
            x, y = ds.transform * (ds.width / 2, ds.height / 2)
        return true_bearing(HEADING_DEG + 90, x, y)

    items = {
        "native": _item("native", scenes["native"], "amplitude", {**common, "sar_pipeline:heading_deg": HEADING_DEG}, 0),
        "geocoded": _item("geocoded", scenes["geocoded"], "amplitude", {**common, "view:azimuth": look_azimuth(scenes["geocoded"])}, 0),
        "dn": _item("dn", scenes["dn"], "amplitude (DN)", {**common, "view:azimuth": look_azimuth(scenes["dn"])}, None, "uint8"),
        "db": _item("db", scenes["db"], "dB", {**common, "sat:orbit_state": "descending"}, -9999.0),
        "geographic": _item("geographic", scenes["geographic"], "sigma0", {}, 0),
        "truncated": _item("truncated", scenes["truncated"], "amplitude", {**common, "sar_pipeline:heading_deg": HEADING_DEG}, 0),
        "small": _item("small", scenes["small"], "amplitude", {**common, "sar_pipeline:heading_deg": 0.0}, 0),
    }  # fmt: skip
    assert abs(desc_heading - 194.3) < 1e-9  # the "db" product's pass: what sat:orbit_state implies there
    catalog = pystac.Catalog("real-format-products", "SAR products as real archives ship them")
    extent = pystac.Extent(
        pystac.SpatialExtent([[3.2, 43.4, 3.3, 43.5]]), pystac.TemporalExtent([[WHEN, WHEN]])
    )
    for name, item in items.items():
        collection = pystac.Collection(f"flight-{name}", f"the {name} product", extent)
        collection.add_item(item)
        catalog.add_child(collection)
    # the catalogue at the top of the folder, so every raster lies under it (an href outside the
    # catalogue's folder is refused unless archive.allowed_href_roots names it)
    catalog.normalize_hrefs(str(root))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python sar_pipeline_tests/products/make_products.py DIR")
    products = write_products(Path(sys.argv[1]))
    print(f"wrote {len(products.scenes)} products, {products.worldcover.name} and {products.catalog}")
