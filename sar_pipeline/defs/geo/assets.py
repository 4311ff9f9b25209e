"""Per-flight tiles: SAR tiles at a fixed GSD in native orientation, and co-located optical tiles."""

import collections

import dagster as dg

from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.pictures import picture
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.geo.checks import check_sar_tiles, record_failed_checks
from sar_pipeline.geo.colocation import OPTICAL_MANIFEST_COLUMNS, colocate_tiles, pairs_preview_png
from sar_pipeline.geo.manifest import read_manifest, write_manifest
from sar_pipeline.geo.scene_table import read_scene_table, with_live_hrefs
from sar_pipeline.geo.settings import OpticalTilesSettings, TilingSettings
from sar_pipeline.geo.tiling import tile_flight
from sar_pipeline.pictures import grid, png_bytes, png_size
from sar_pipeline.storage import publish_dir, validate_id


class TilingConfig(dg.Config, TilingSettings):
    """How SAR scenes become tiles (resampling, radiometry, tiling)."""


class OpticalTilesConfig(dg.Config, OpticalTilesSettings):
    """Which co-located optical tiles are kept."""


SAR_TILE_CHECKS = {
    "gsd_matches_config": "Every tile's pixel size equals the configured GSD (relative tolerance 1e-6).",
    "tiles_are_tile_size": "Every tile PNG is tile_size × tile_size.",
    "nodata_under_threshold": "Every kept tile's nodata fraction is at most max_nodata_fraction.",
    "footprints_inside_scene": "Tile footprints are valid polygons whose valid part lies inside the scene footprint.",
}


#: checks whose failing tiles never enter the dataset (recorded per tile in the manifest)
BLOCKING_SAR_TILE_CHECKS = {"gsd_matches_config", "tiles_are_tile_size", "nodata_under_threshold"}


def _scene_table_md(result) -> str:
    """The per-scene summary as a Markdown table (grid, orientation, unit, tiles kept, why not)."""
    lines = [
        "| scene | output CRS | grid | orientation | unit | upsampling | kept / positions | ENL | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sid, s in result.scenes.items():
        rotation = (
            f" (rotated {s.raster_rotation_deg:.1f}°)" if s.raster_rotation_deg not in (0.0, 180.0) else ""
        )
        enl = f"{s.speckle.equivalent_number_of_looks:.1f}" if s.speckle else (s.speckle_note or "–")
        lines.append(
            f"| {sid} | {s.output_crs} | {s.grid_shape[0]}×{s.grid_shape[1]} | {s.orientation_source}{rotation} "
            f"| {s.encoding.unit} ({s.encoding.unit_source}) | {s.upsampling_factor:.2f}× "
            f"| {s.tiles_kept} / {s.tile_positions} | {enl} | {s.note or ''} |"
        )
    for sid, reason in result.skipped_scenes.items():
        lines.append(f"| {sid} | | | | | | skipped | | {reason} |")
    return "\n".join(line.replace("\n", " ") for line in lines)


@dg.asset(
    partitions_def=flight_partitions,
    group_name="flights",
    kinds={"gdal", "png", "geoparquet"},
    deps=[dg.AssetKey("sar_scenes")],
    check_specs=[
        dg.AssetCheckSpec(
            name,
            asset="sar_tiles",
            description=d,
            blocking=name in BLOCKING_SAR_TILE_CHECKS,
            partitions_def=flight_partitions,
        )
        for name, d in SAR_TILE_CHECKS.items()
    ],
    description="The flight's scenes resampled to a fixed ground sample distance in native SAR orientation "
    "(range left→right, azimuth top→bottom), in dB (16-bit over each tile's own range, with its histogram), "
    "cut into tiles; land cover warped onto the same tiles; GeoParquet manifest.",
)
def sar_tiles(
    context: dg.AssetExecutionContext,
    config: TilingConfig,
    archive: SarArchiveResource,
    storage: StorageRoot,
    landcover: LandCoverResource,
) -> dg.MaterializeResult:
    flight_id = validate_id(context.partition_key, "flight id")
    sar_archive = archive.get_archive()
    scenes = with_live_hrefs(
        read_scene_table(storage.flight_path(flight_id, "sar_scenes.parquet")), sar_archive, flight_id
    )
    with (
        landcover.get_source() as source,
        publish_dir(storage.flight_path(flight_id, "sar_tiles")) as publication,
    ):
        out_dir, rel_dir = publication.local, storage.relative(publication.final)
        result = tile_flight(scenes, sar_archive.open_scene, config, out_dir, rel_dir, landcover=source)
        for scene_id, reason in result.skipped_scenes.items():
            context.log.warning(f"skipped scene {scene_id}: {reason}")
        for warning in result.warnings(config):
            context.log.warning(warning)
        if not result.rows and scenes:
            # raised inside the block: the flight's previous tiles stay in place
            reasons = result.no_tile_reasons()
            raise SarPipelineError(
                f"flight {flight_id}",
                "no tile kept: " + "; ".join(f"scene {k}: {v}" for k, v in reasons.items()),
            )
        # checked before publishing, on the files written: each tile's manifest row names the blocking
        # checks it failed, so training_dataset leaves it out whenever it reads this manifest
        checks = check_sar_tiles(
            result.rows, scenes, config, image_size=lambda p: png_size(out_dir / p.rsplit("/", 1)[-1])
        )
        record_failed_checks(result.rows, checks, BLOCKING_SAR_TILE_CHECKS)
        write_manifest(result.rows, out_dir / "manifest.parquet")
    # what went wrong reading a scene, in full (the file and the window), a few per scene
    read_errors = {sid: s.read_errors for sid, s in result.scenes.items() if s.read_errors}
    metadata = {
        "path": dg.MetadataValue.path(
            str(storage.flight_folder(flight_id, "sar_tiles") / "manifest.parquet")
        ),
        "tile_count": len(result.rows),
        "dropped_count": len(result.dropped),
        "dropped_reasons": dg.MetadataValue.json(dict(collections.Counter(d.kind for d in result.dropped))),
        "read_errors": dg.MetadataValue.json(read_errors),
        "skipped_scenes": dg.MetadataValue.json(result.skipped_scenes),
        "scenes": dg.MetadataValue.md(_scene_table_md(result)),
        "scene_summaries": dg.MetadataValue.json({k: v.to_json() for k, v in result.scenes.items()}),
        "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in result.warnings(config)) or "none"),
        "nonfinite_pixels_as_nodata": dg.MetadataValue.json(
            {k: v.invalid_pixel_count for k, v in result.scenes.items() if v.invalid_pixel_count}
        ),
        "unmapped_landcover_codes": dg.MetadataValue.json(result.unmapped_landcover_codes),
        "ground_sample_distance_m": config.ground_sample_distance_m,
        "output_crs": ", ".join(sorted({s.output_crs for s in result.scenes.values()})),
    }
    if result.previews:
        preview = png_bytes(
            grid(
                [im for _, im in result.previews],
                columns=3,
                labels=[t.rsplit("__", 1)[-1] for t, _ in result.previews],
            )
        )
        metadata["preview"] = picture(storage, preview, "SAR tiles")
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=c.name, passed=c.passed, metadata=c.metadata, description=c.description
            )
            for c in checks
        ],
    )


@dg.asset(
    partitions_def=flight_partitions,
    group_name="flights",
    kinds={"gdal", "png", "geoparquet"},
    deps=[sar_tiles],
    check_specs=[
        dg.AssetCheckSpec(
            "optical_coverage_above_threshold",
            asset="optical_tiles",
            description="Every kept optical tile covers at least min_optical_coverage of its SAR tile.",
            partitions_def=flight_partitions,
        )
    ],
    description="For each SAR tile, the optical image warped onto the SAR tile's exact grid (same CRS, rotated "
    "transform and shape): pixel-aligned pairs, with coverage fraction and acquisition time gap.",
)
def optical_tiles(
    context: dg.AssetExecutionContext,
    config: OpticalTilesConfig,
    optical: OpticalResource,
    storage: StorageRoot,
) -> dg.MaterializeResult:
    flight_id = validate_id(context.partition_key, "flight id")
    sar_rows = read_manifest(storage.flight_folder(flight_id, "sar_tiles") / "manifest.parquet")
    source = optical.get_source()
    for source_input, reason in source.skipped.items():
        context.log.warning(f"skipped optical input {source_input}: {reason}")
    with publish_dir(storage.flight_path(flight_id, "optical_tiles")) as publication:
        out_dir, rel_dir = publication.local, storage.relative(publication.final)
        result = colocate_tiles(sar_rows, source, out_dir, rel_dir, config.min_optical_coverage)
        write_manifest(result.rows, out_dir / "manifest.parquet", columns=OPTICAL_MANIFEST_COLUMNS)
    for tile_id, reason in list(result.skipped.items())[:20]:
        context.log.warning(f"skipped optical tile {tile_id}: {reason}")
    low = [r["tile_id"] for r in result.rows if r["coverage_fraction"] < config.min_optical_coverage]
    gaps = [r["time_gap_s"] for r in result.rows if r["time_gap_s"] is not None]
    metadata = {
        "path": dg.MetadataValue.path(
            str(storage.flight_folder(flight_id, "optical_tiles") / "manifest.parquet")
        ),
        "optical_source": source.name,
        "skipped_optical_inputs": dg.MetadataValue.json(dict(source.skipped)),
        "tile_count": len(result.rows),
        "skipped_count": len(result.skipped),
        "skipped": dg.MetadataValue.json(dict(list(result.skipped.items())[:50])),
        "mean_coverage_fraction": round(
            sum(r["coverage_fraction"] for r in result.rows) / len(result.rows), 3
        )
        if result.rows
        else 0.0,
        "max_time_gap_days": round(max(gaps) / 86400, 2) if gaps else "unknown",
    }
    preview = pairs_preview_png(storage.root(), sar_rows, result)
    if preview is not None:
        metadata["preview"] = picture(storage, preview, "SAR tiles beside their optical tiles")
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="optical_coverage_above_threshold",
                passed=not low and (bool(result.rows) or not sar_rows),
                metadata={
                    "below_threshold": len(low),
                    "kept": len(result.rows),
                    "skipped": len(result.skipped),
                },
            )
        ],
    )
