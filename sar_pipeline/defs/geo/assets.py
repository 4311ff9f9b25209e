"""Per-flight tiles: SAR tiles at a fixed GSD in native orientation, and co-located optical tiles."""

import collections

import dagster as dg

from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.geo.resources import OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.geo.checks import check_sar_tiles
from sar_pipeline.geo.colocation import colocate_tiles, pairs_preview_png
from sar_pipeline.geo.manifest import read_manifest, write_manifest
from sar_pipeline.geo.scene_table import read_scene_table, with_live_hrefs
from sar_pipeline.geo.settings import OpticalTilesSettings, TilingSettings
from sar_pipeline.geo.tiling import tile_flight
from sar_pipeline.pictures import grid, markdown_image, png_bytes, png_size
from sar_pipeline.storage import atomic_local_dir, validate_id


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


def _reason_counts(reasons: list[str]) -> dict[str, int]:
    """Drop reasons grouped by kind ("nodata fraction over threshold", "all nodata", "read error")."""
    kinds = (
        "nodata fraction over threshold" if r.startswith("nodata fraction") else r.split(":", 1)[0]
        for r in reasons
    )
    return dict(collections.Counter(kinds))


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
            blocking=name != "footprints_inside_scene",
            partitions_def=flight_partitions,
        )
        for name, d in SAR_TILE_CHECKS.items()
    ],
    description="The flight's scenes resampled to a fixed ground sample distance in native SAR orientation "
    "(range left→right, azimuth top→bottom), in dB mapped to 8/16-bit, cut into tiles; GeoParquet manifest.",
)
def sar_tiles(
    context: dg.AssetExecutionContext, config: TilingConfig, archive: SarArchiveResource, storage: StorageRoot
) -> dg.MaterializeResult:
    flight_id = validate_id(context.partition_key, "flight id")
    sar_archive = archive.get_archive()
    scenes = with_live_hrefs(
        read_scene_table(storage.flight_path(flight_id, "sar_scenes.parquet")), sar_archive, flight_id
    )
    rel_dir = f"flights/{flight_id}/sar_tiles"
    with atomic_local_dir(storage.flight_path(flight_id, "sar_tiles")) as out_dir:
        result = tile_flight(scenes, sar_archive.open_scene, config, out_dir, rel_dir)
        for scene_id, reason in result.skipped_scenes.items():
            context.log.warning(f"skipped scene {scene_id}: {reason}")
        if not result.rows and scenes:
            # raised inside the block: the flight's previous tiles stay in place
            raise SarPipelineError(
                f"flight {flight_id}", "no tile kept: " + "; ".join(result.skipped_scenes.values())
            )
        write_manifest(result.rows, out_dir / "manifest.parquet")
    read_errors: dict[str, str] = {}
    for dropped in result.dropped:
        if dropped.reason.startswith("read error") and dropped.scene_id not in read_errors:
            read_errors[dropped.scene_id] = dropped.reason
            context.log.warning(f"scene {dropped.scene_id}: tiles dropped, {dropped.reason}")
    checks = check_sar_tiles(result.rows, scenes, config, image_size=lambda p: png_size(storage.root() / p))
    metadata = {
        "path": dg.MetadataValue.path(str(storage.flight_path(flight_id, "sar_tiles", "manifest.parquet"))),
        "tile_count": len(result.rows),
        "dropped_count": len(result.dropped),
        "dropped_reasons": dg.MetadataValue.json(_reason_counts([d.reason for d in result.dropped])),
        # what went wrong reading a scene, in full (the file and the cause), first tile per scene
        "read_errors": dg.MetadataValue.json(read_errors),
        "skipped_scenes": dg.MetadataValue.json(result.skipped_scenes),
        "nonfinite_pixels_as_nodata": dg.MetadataValue.json(result.invalid_pixels),
        "speckle_first_tile": dg.MetadataValue.json(
            {
                scene_id: {
                    "enl": round(st.equivalent_number_of_looks, 2),
                    "cv": round(st.coefficient_of_variation, 3),
                }
                for scene_id, st in result.speckle.items()
            }
        ),
        "ground_sample_distance_m": config.ground_sample_distance_m,
        "db_range": f"{result.radiometry.db_min:.2f} – {result.radiometry.db_max:.2f} dB"
        if result.radiometry
        else "n/a",
        "bit_depth": config.bit_depth,
    }
    if result.previews:
        preview = png_bytes(
            grid(
                [im for _, im in result.previews],
                columns=3,
                labels=[t.rsplit("__", 1)[-1] for t, _ in result.previews],
            )
        )
        metadata["preview"] = dg.MetadataValue.md(markdown_image(preview, "SAR tiles"))
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
    sar_rows = read_manifest(storage.flight_path(flight_id, "sar_tiles", "manifest.parquet"))
    source = optical.get_source()
    rel_dir = f"flights/{flight_id}/optical_tiles"
    with atomic_local_dir(storage.flight_path(flight_id, "optical_tiles")) as out_dir:
        result = colocate_tiles(sar_rows, source, out_dir, rel_dir, config.min_optical_coverage)
        write_manifest(result.rows, out_dir / "manifest.parquet")
    for tile_id, reason in list(result.skipped.items())[:20]:
        context.log.warning(f"skipped optical tile {tile_id}: {reason}")
    low = [r["tile_id"] for r in result.rows if r["coverage_fraction"] < config.min_optical_coverage]
    gaps = [r["time_gap_s"] for r in result.rows if r["time_gap_s"] is not None]
    metadata = {
        "path": dg.MetadataValue.path(
            str(storage.flight_path(flight_id, "optical_tiles", "manifest.parquet"))
        ),
        "optical_source": source.name,
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
        metadata["preview"] = dg.MetadataValue.md(
            markdown_image(preview, "SAR tiles beside their optical tiles")
        )
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
