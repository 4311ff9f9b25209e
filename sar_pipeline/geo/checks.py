"""Quality checks on a flight's SAR tile manifest: what the ``sar_tiles`` asset checks report."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from affine import Affine
from shapely import wkb

from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.geo.footprints import grid_footprint, reproject_geometry
from sar_pipeline.geo.grid import crs_unit_in_metres, pixel_size
from sar_pipeline.geo.settings import TilingSettings


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    """Result of one quality check over a tile manifest."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any]
    #: every tile that failed this check
    failing_tiles: tuple[str, ...] = ()


def check_sar_tiles(
    rows: Sequence[dict[str, Any]],
    scenes: Sequence[SceneRecord],
    params: TilingSettings,
    image_size: Callable[[str], tuple[int, int]] | None = None,
) -> list[CheckOutcome]:
    """Quality checks on a SAR tile manifest: GSD, tile size, nodata fraction, footprints.

    ``image_size(path)`` returns a written tile's (width, height) to check the files themselves,
    not only the manifest.
    """
    gsd_bad, size_bad, nodata_bad, fp_bad = [], [], [], []
    scene_by_id = {s.scene_id: s for s in scenes}
    footprints: dict[tuple[str, str], Any] = {}  # (scene, tile CRS) → the scene footprint in that CRS
    for row in rows:
        t = Affine(*row["transform"])
        unit = crs_unit_in_metres(row["crs"])
        for size in pixel_size(t):
            if abs(size * unit - params.ground_sample_distance_m) > 1e-6 * params.ground_sample_distance_m:
                gsd_bad.append(row["tile_id"])
                break
        shape = (row["height"], row["width"])
        if image_size is not None:
            w, h = image_size(row["path"])
            shape = (h, w)
        if shape != (params.tile_size, params.tile_size):
            size_bad.append(row["tile_id"])
        if row["nodata_fraction"] > params.max_nodata_fraction:
            nodata_bad.append(row["tile_id"])
        fp = wkb.loads(row["footprint_scene_crs"])
        scene = scene_by_id.get(row["scene_id"])
        if not fp.is_valid or fp.area <= 0 or scene is None:
            fp_bad.append(row["tile_id"])
            continue
        key = (scene.scene_id, row["crs"])
        if key not in footprints:
            footprints[key] = reproject_geometry(
                grid_footprint(scene.transform, scene.shape), scene.crs, row["crs"]
            )
        inside = fp.intersection(footprints[key]).area / fp.area
        # the valid part of the tile must lie inside the scene: the rest is nodata padding
        if inside < 1.0 - row["nodata_fraction"] - 0.02:
            fp_bad.append(row["tile_id"])

    def outcome(name, bad, description):
        return CheckOutcome(
            name,
            not bad,
            description,
            {"failing_tiles": len(bad), "examples": ", ".join(bad[:5])},
            tuple(bad),
        )

    return [
        outcome(
            "gsd_matches_config", gsd_bad, f"pixel size = {params.ground_sample_distance_m} m (rel tol 1e-6)"
        ),
        outcome("tiles_are_tile_size", size_bad, f"every tile is {params.tile_size}×{params.tile_size}"),
        outcome("nodata_under_threshold", nodata_bad, f"nodata fraction ≤ {params.max_nodata_fraction}"),
        outcome(
            "footprints_inside_scene", fp_bad, "footprints valid; their valid part inside the scene footprint"
        ),
    ]


def record_failed_checks(
    rows: Sequence[dict[str, Any]], outcomes: Sequence[CheckOutcome], blocking: set[str]
) -> None:
    """Write into each manifest row the blocking checks it failed (``failed_checks``, JSON list, or None).

    The manifest then says which tiles must not enter the dataset, whatever later runs read it:
    ``training_dataset`` leaves those tiles out, naming the checks.
    """
    failed: dict[str, list[str]] = {}
    for outcome in outcomes:
        if outcome.name in blocking:
            for tile_id in outcome.failing_tiles:
                failed.setdefault(tile_id, []).append(outcome.name)
    for row in rows:
        names = failed.get(row["tile_id"])
        row["failed_checks"] = json.dumps(names) if names else None
