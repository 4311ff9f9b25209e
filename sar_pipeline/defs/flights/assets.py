from collections import Counter

import dagster as dg

from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.pictures import picture
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.errors import ArchiveError, SarPipelineError
from sar_pipeline.geo.manifest import write_geoparquet
from sar_pipeline.geo.scene_table import flight_quicklook_png, grid_scenes, reach_problem, scene_table
from sar_pipeline.geo.settings import SceneSettings
from sar_pipeline.storage import atomic_write_bytes, validate_id


class SceneConfig(dg.Config, SceneSettings):
    """Which scenes can be gridded, and in which CRS."""


@dg.asset(
    partitions_def=flight_partitions,
    group_name="flights",
    kinds={"stac", "geoparquet"},
    description="The flight's SAR scenes as queried from the archive: acquisition metadata, footprints (WGS84 "
    "and scene CRS) and the projected CRS each is gridded in, one GeoParquet row per scene; scenes that "
    "cannot be gridded are left out with the reason.",
)
def sar_scenes(
    context: dg.AssetExecutionContext, config: SceneConfig, archive: SarArchiveResource, storage: StorageRoot
) -> dg.MaterializeResult:
    flight_id = validate_id(context.partition_key, "flight id")
    sar_archive = archive.get_archive()
    skipped: list[str] = []

    def record_skip(error: SarPipelineError) -> None:
        context.log.warning(f"skipped scene: {error}")
        skipped.append(str(error))

    policy = archive.href_policy()
    reachable = []
    for scene in sar_archive.list_scenes(flight_id, on_error=record_skip):
        problem = reach_problem(scene, policy)
        if problem:
            record_skip(ArchiveError(f"scene {scene.scene_id!r}", problem))
        else:
            reachable.append(scene)
    gridded = grid_scenes(reachable, config)
    for scene_id, reason in gridded.rejected.items():
        record_skip(ArchiveError(f"scene {scene_id!r}", reason))
    for warning in gridded.warnings:
        context.log.warning(warning)
    scenes = gridded.scenes
    if not scenes:
        raise SarPipelineError(f"flight {flight_id}", "no usable scene in the archive: " + "; ".join(skipped))
    table = scene_table(scenes)
    path = storage.flight_path(flight_id, "sar_scenes.parquet")
    write_geoparquet(table, path)

    # the table is the output; the picture (every scene of the flight) is only for people
    unreadable: list[str] = []

    def record_unreadable(error: SarPipelineError) -> None:
        context.log.warning(f"no quick-look: {error}")
        unreadable.append(f"no quick-look: {error}")

    quicklook = flight_quicklook_png(sar_archive, scenes, on_error=record_unreadable)
    quicklook_md = "\n\n".join(unreadable)
    if quicklook is not None:
        quicklook_path = storage.flight_path(flight_id, "sar_scenes_quicklook.png")
        atomic_write_bytes(quicklook_path, quicklook)
        alt = f"{len(scenes)} scenes of {flight_id}, native orientation, dB"
        shown = picture(storage, quicklook, alt, path=str(quicklook_path)).value
        quicklook_md = "\n\n".join([shown, *unreadable])
    spacings = [
        v for s in scenes for v in (s.pixel_spacing_range_m, s.pixel_spacing_azimuth_m) if v is not None
    ]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "scene_count": len(scenes),
            "skipped_scenes": len(skipped),
            "skip_reasons": dg.MetadataValue.md("\n".join(f"- {s}" for s in skipped) or "none"),
            "frequency_bands": ", ".join(sorted({s.frequency_band or "unknown" for s in scenes})),
            "polarizations": ", ".join(
                sorted({p for s in scenes for p in (s.polarizations or ("unknown",))})
            ),
            "pixel_spacing_m_range": f"{min(spacings):.3f} – {max(spacings):.3f}" if spacings else "unknown",
            "output_crs": ", ".join(sorted({s.output_crs or "" for s in scenes})),
            "heading_sources": dg.MetadataValue.json(
                dict(Counter(s.heading_source or "unknown" for s in scenes))
            ),
            "orientation_warnings": dg.MetadataValue.md(
                "\n".join(f"- {w}" for w in gridded.warnings) or "none"
            ),
            "footprint_area_km2": round(float(table["footprint_area_m2"].sum()) / 1e6, 3),
            "quicklook": dg.MetadataValue.md(quicklook_md),
        }
    )
