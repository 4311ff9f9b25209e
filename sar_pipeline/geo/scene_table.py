"""The ``sar_scenes`` table: one row per scene, as GeoParquet with WGS84 and scene-CRS footprints."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from PIL import Image
from pyproj import CRS
from rasterio.enums import Resampling

from sar_pipeline import radiometry
from sar_pipeline.archive.protocol import SarArchive, SceneRecord
from sar_pipeline.errors import ArchiveError, SarPipelineError
from sar_pipeline.geo.footprints import area_m2, grid_footprint, to_wgs84
from sar_pipeline.geo.grid import auto_output_crs, build_output_grid
from sar_pipeline.geo.settings import SceneSettings
from sar_pipeline.hrefs import HrefPolicy, is_redacted, redact
from sar_pipeline.pictures import grid, png_bytes, to_uint8
from sar_pipeline.storage import as_path, is_local, local_str
from sar_pipeline.timestamps import parse_utc

#: acquisition fields a complete record has (the ``sar_scenes`` completeness check counts them)
ACQUISITION_FIELDS = (
    "datetime",
    "platform",
    "frequency_band",
    "polarizations",
    "resolution_range_m",
    "resolution_azimuth_m",
    "pixel_spacing_range_m",
    "pixel_spacing_azimuth_m",
    "looks_equivalent_number",
    "incidence_angle_deg",
    "heading_deg",
    "observation_direction",
)

# JSON-encoded in Parquet: nested dicts of free-form item properties have no fixed schema
_JSON_COLUMNS = ("extra_assets", "properties")


def scene_footprint(scene: SceneRecord):
    """The scene's raster footprint in its own CRS (the full grid, nodata included)."""
    return grid_footprint(scene.transform, scene.shape)


def scene_table(scenes: Sequence[SceneRecord]) -> gpd.GeoDataFrame:
    """Scene records as a GeoDataFrame: ``geometry`` = WGS84 footprint, ``footprint_scene_crs`` = WKB."""
    rows = []
    geoms = []
    for scene in scenes:
        row = scene.to_row()
        for col in _JSON_COLUMNS:
            row[col] = json.dumps(row[col], sort_keys=True, default=str)
        footprint = scene_footprint(scene)
        row["footprint_scene_crs"] = footprint.wkb
        row["footprint_area_m2"] = area_m2(footprint, scene.crs)
        rows.append(row)
        geoms.append(to_wgs84(footprint, scene.crs))
    columns = [f.name for f in dataclasses.fields(SceneRecord)] + ["footprint_scene_crs", "footprint_area_m2"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True)
    return gpd.GeoDataFrame(frame, geometry=geoms, crs="EPSG:4326")


def read_scene_table(path) -> list[SceneRecord]:
    """The scene records of a :func:`scene_table` written with ``geo.manifest.write_geoparquet`` (local path or UPath)."""
    path = as_path(path)
    if is_local(path):
        frame = gpd.read_parquet(local_str(path))
    else:  # geopandas cannot take a remote UPath: hand it an fsspec file
        with path.open("rb") as f:
            frame = gpd.read_parquet(f)
    records = []
    for row in frame.to_dict("records"):
        for col in _JSON_COLUMNS:
            row[col] = json.loads(row[col]) if row.get(col) else {}
        row = {k: (None if _is_missing(v) else v) for k, v in row.items()}
        row["datetime"] = parse_utc(row.get("datetime"))
        records.append(SceneRecord.from_row(row))
    return records


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT


@dataclasses.dataclass
class GriddedScenes:
    """The outcome of :func:`grid_scenes`: usable scenes (output CRS recorded), rejected ones, warnings."""

    scenes: list[SceneRecord]
    rejected: dict[str, str]  # scene id → why it cannot be gridded
    warnings: list[str]


def grid_scenes(scenes: Sequence[SceneRecord], settings: SceneSettings) -> GriddedScenes:
    """Decide each scene's output CRS and check that it can be gridded there.

    A scene is rejected, with the reason, when its georeferencing is unusable, when it cannot be
    placed in the output CRS (``settings.output_crs``, else its own projected CRS, else the UTM zone
    of its centre), or — with ``require_heading`` — when its heading or look side is unknown (else
    that is a warning: its tiles keep the raster's axes).
    """
    kept, rejected, warnings = [], {}, []
    for scene in scenes:
        # the name reaches warnings (logs, metadata) as plain text: a pre-signed href's credential must not
        name = f"scene {scene.scene_id} ({redact(scene.raster_href)})"
        problems = georeferencing_problems(scene)
        if problems:
            rejected[scene.scene_id] = "; ".join(problems)
            continue
        try:
            output_crs = auto_output_crs(scene.crs, scene.transform, scene.shape, settings.output_crs, name)
            build_output_grid(
                scene.crs,
                scene.transform,
                scene.shape,
                1.0,
                heading_deg=scene.heading_deg,
                observation_direction=scene.observation_direction,
                output_crs=output_crs,
                source=name,
            )
        except SarPipelineError as exc:
            rejected[scene.scene_id] = f"cannot be gridded: {exc.reason}"
            continue
        oriented = scene.heading_deg is not None and (scene.observation_direction or "") in ("left", "right")
        if not oriented:
            missing = "heading" if scene.heading_deg is None else "look side (sar:observation_direction)"
            if settings.require_heading:
                rejected[scene.scene_id] = (
                    f"{missing} unknown and require_heading is set: native SAR orientation cannot be decided"
                )
                continue
            warnings.append(
                f"{name}: {missing} unknown; its tiles will keep the raster's own axes (map orientation for a "
                "north-up product)"
            )
        kept.append(dataclasses.replace(scene, output_crs=output_crs))
    return GriddedScenes(kept, rejected, warnings)


def georeferencing_problems(scene: SceneRecord) -> list[str]:
    """Why a scene's georeferencing is unusable (empty list when it is fine)."""
    problems = []
    try:
        CRS.from_user_input(scene.crs)
    except Exception as exc:  # pyproj raises CRSError and others for unparsable input
        problems.append(f"CRS {scene.crs!r} cannot be parsed ({exc})")
    if abs(Affine(*scene.transform).determinant) < 1e-12:
        problems.append(f"geotransform {scene.transform} is not invertible")
    if scene.shape[0] <= 0 or scene.shape[1] <= 0:
        problems.append(f"raster shape {scene.shape} is empty")
    return problems


#: extra scene assets the tiling stage opens (kept here, beside the scene table, as the reach rule's list)
OPENED_EXTRA_ASSETS = ("landcover", "idealised")


def reach_problem(scene: SceneRecord, policy: HrefPolicy) -> str | None:
    """Why a scene's raster, or an extra raster the pipeline opens, lies outside the archive's reach
    (:class:`~sar_pipeline.hrefs.HrefPolicy`), or None. Applied to every archive plug-in's records."""
    hrefs = [("raster", scene.raster_href)] + [
        (f"asset {key!r}", scene.extra_assets[key])
        for key in OPENED_EXTRA_ASSETS
        if key in scene.extra_assets
    ]
    for what, href in hrefs:
        problem = policy.problem(href, what)
        if problem:
            return problem
    return None


def with_live_hrefs(scenes: Sequence[SceneRecord], archive: SarArchive, flight_id: str) -> list[SceneRecord]:
    """The scenes of a stored table, with the archive's own hrefs where the table's were redacted.

    The table never holds a pre-signed URL's credential (``SceneRecord.to_row``); to open such a
    scene the archive is asked again (which also renews signatures that expired meanwhile). A scene
    the archive no longer lists keeps its redacted href, and opening it fails naming the scene.
    """
    redacted = [
        s
        for s in scenes
        if is_redacted(s.raster_href) or any(is_redacted(h) for h in s.extra_assets.values())
    ]
    if not redacted:
        return list(scenes)
    live = {s.scene_id: s for s in archive.list_scenes(flight_id, on_error=lambda _error: None)}
    return [live.get(s.scene_id, s) if s in redacted else s for s in scenes]


#: what a quick-look may decode from a raster without overviews (a picture for people, not the data)
QUICKLOOK_MAX_DECODED_BYTES = 32 * 2**30


def _quicklook_decoded_bytes(src, out_shape: tuple[int, int]) -> int:
    """Bytes GDAL decodes to read ``src`` at ``out_shape`` without overviews: every block that holds a
    sampled row and column (each output row or column touches at most one block row or column)."""
    block_rows, block_cols = src.block_shapes[0]
    n_rows, n_cols = -(-src.height // block_rows), -(-src.width // block_cols)
    touched = min(out_shape[0], n_rows) * min(out_shape[1], n_cols)
    return touched * block_rows * block_cols * np.dtype(src.dtypes[0]).itemsize


def quicklook_png(archive: SarArchive, scene: SceneRecord, max_size: int = 384) -> bytes:
    """A small 8-bit quick-look of a scene in its native (raster) orientation, in dB, decimated.

    Pixel values are read in the scene's unit with its scale/offset (integer-scaled products
    included); nodata and non-positive backscatter are black.
    """
    with archive.open_scene(scene) as src:
        scale = max(src.height, src.width) / max_size
        out_shape = (max(1, int(src.height / scale)), max(1, int(src.width / scale)))
        # averaging reads every source pixel: past 8× decimation without overviews, sample instead
        # (a picture must not cost a pass over a 10⁹-pixel scene, or hang on a hostile header)
        sampled = scale > 8 and not src.overviews(1)
        decoded = _quicklook_decoded_bytes(src, out_shape)
        if not src.overviews(1) and decoded > QUICKLOOK_MAX_DECODED_BYTES:
            # a hostile header (10⁶ × 10⁶ pixels in 8192² blocks) would hang here for hours
            raise ArchiveError(
                scene.raster_href,
                f"no quick-look: a {src.height} × {src.width} raster without overviews would decode "
                f"{decoded / 2**30:.0f} GiB (limit {QUICKLOOK_MAX_DECODED_BYTES / 2**30:.0f} GiB; "
                "add overviews, e.g. gdaladdo)",
            )
        try:
            band = src.read(
                1,
                out_shape=out_shape,
                resampling=Resampling.nearest if sampled else Resampling.average,
                masked=True,
            )
        except rasterio.errors.RasterioIOError as exc:
            raise ArchiveError(scene.raster_href, f"cannot read the raster for a quick-look ({exc})") from exc
    unit, _ = radiometry.resolve_value_unit(scene.value_unit, band.dtype)
    # NaN marks nodata; integer rasters cannot hold it, so widen them first
    raw = band if np.iscomplexobj(band) else band.astype(np.float32)
    intensity, _ = radiometry.to_intensity(
        raw.filled(np.nan),
        unit,
        scale=scene.value_scale,
        offset=scene.value_offset,
        source=scene.raster_href,
    )
    db = radiometry.intensity_to_db(intensity)
    mask = ~np.isfinite(intensity) | (intensity <= 0)
    return png_bytes(to_uint8(db, nodata_mask=mask))


def flight_quicklook_png(
    archive: SarArchive,
    scenes: Sequence[SceneRecord],
    on_error: Callable[[SarPipelineError], None],
    columns: int = 4,
    cell: int = 256,
) -> bytes | None:
    """One picture of every scene of a flight: each scene's quick-look (native orientation, dB) in a
    grid, labelled with its scene id; a scene that cannot be read is reported to ``on_error`` and left
    out. ``None`` when no scene could be drawn."""
    looks, labels = [], []
    for scene in scenes:
        try:
            looks.append(Image.open(io.BytesIO(quicklook_png(archive, scene, max_size=cell))))
        except SarPipelineError as error:
            on_error(error)
            continue
        labels.append(scene.scene_id)
    if not looks:
        return None
    return png_bytes(grid(looks, columns=min(columns, len(looks)), labels=labels, cell=cell))
