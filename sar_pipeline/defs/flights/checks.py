import dagster as dg

from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.geo.scene_table import ACQUISITION_FIELDS, georeferencing_problems, read_scene_table


def _scenes(context: dg.AssetCheckExecutionContext, storage: StorageRoot):
    return read_scene_table(storage.flight_path(context.partition_key, "sar_scenes.parquet"))


@dg.asset_check(
    asset=sar_scenes,
    partitions_def=flight_partitions,
    description="Every scene has a parsable CRS, an invertible geotransform and a non-empty raster.",
    blocking=True,
)
def sar_scenes_georeferencing(context: dg.AssetCheckExecutionContext, storage: StorageRoot):
    problems = {s.scene_id: georeferencing_problems(s) for s in _scenes(context, storage)}
    bad = {k: v for k, v in problems.items() if v}
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"scenes": len(problems), "problems": dg.MetadataValue.json(bad)},
    )


@dg.asset_check(
    asset=sar_scenes,
    partitions_def=flight_partitions,
    description="Share of optional acquisition fields that are known; "
    "unknown ones are allowed but reported (warning).",
)
def sar_scenes_metadata_complete(context: dg.AssetCheckExecutionContext, storage: StorageRoot):
    scenes = _scenes(context, storage)
    missing = {s.scene_id: [f for f in ACQUISITION_FIELDS if getattr(s, f) is None] for s in scenes}
    missing = {k: v for k, v in missing.items() if v}
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "scenes_with_unknown_fields": len(missing),
            "unknown_fields": dg.MetadataValue.json(missing),
        },
    )
