"""Another archive API behind the SarArchive protocol, loaded by name as the ``archive`` resource does.

``ManifestArchive`` stands for a user's own archive service (ONERA's SETHI in the paper): here a
JSON manifest ``{"flights": {flight_id: [{"scene_id", "path", "incidence_angle_deg"}]}}``. A user
writes such a class in their own package and sets the resource's ``archive_class`` to
``"my_package.module:MyArchive"`` (with ``options`` passed as keyword arguments).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import rasterio

from sar_pipeline.archive import SarArchive, load_archive
from sar_pipeline.archive.protocol import FlightRecord, SceneRecord
from sar_pipeline.errors import ArchiveError, ConfigError, SarPipelineError
from sar_pipeline_tests.archive.conftest import ROTATED, write_geotiff


class ManifestArchive:
    """A minimal SarArchive over a JSON manifest (georeferencing read from each raster)."""

    def __init__(self, uri: str, platform: str | None = None):
        self.manifest = json.loads(Path(uri).read_text())
        self.platform = platform

    def list_flights(self, since: str | None = None) -> list[FlightRecord]:
        return [FlightRecord(flight_id=f, platform=self.platform) for f in sorted(self.manifest["flights"])]

    def list_scenes(
        self, flight_id: str, on_error: Callable[[SarPipelineError], None] | None = None
    ) -> list[SceneRecord]:
        scenes = []
        for entry in self.manifest["flights"][flight_id]:
            try:
                with rasterio.open(entry["path"]) as src:
                    georeferencing = (src.crs.to_string(), tuple(src.transform)[:6], src.shape, src.nodata)
            except rasterio.errors.RasterioIOError as exc:
                error = ArchiveError(entry["scene_id"], f"cannot open {entry['path']}: {exc}")
                if on_error is None:
                    raise error from exc
                on_error(error)
                continue
            crs, transform, shape, nodata = georeferencing
            scenes.append(
                SceneRecord(
                    scene_id=entry["scene_id"],
                    flight_id=flight_id,
                    raster_href=entry["path"],
                    crs=crs,
                    transform=transform,
                    shape=shape,
                    nodata=nodata,
                    platform=self.platform,
                    incidence_angle_deg=entry.get("incidence_angle_deg"),
                )
            )
        return sorted(scenes, key=lambda s: s.scene_id)

    def open_scene(self, scene: SceneRecord) -> rasterio.DatasetReader:
        return rasterio.open(scene.raster_href)


def test_a_custom_archive_class_is_loaded_by_name(tmp_path):
    raster = write_geotiff(tmp_path / "a.tif")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "flights": {
                    "sethi-2019-03": [
                        {"scene_id": "a", "path": str(raster), "incidence_angle_deg": 45.0},
                        {"scene_id": "gone", "path": str(tmp_path / "gone.tif")},
                    ]
                }
            }
        )
    )
    archive = load_archive(str(manifest), f"{__name__}:ManifestArchive", platform="SETHI")
    assert isinstance(archive, ManifestArchive) and isinstance(archive, SarArchive)
    assert [f.flight_id for f in archive.list_flights()] == ["sethi-2019-03"]
    errors: list[SarPipelineError] = []
    (scene,) = archive.list_scenes("sethi-2019-03", on_error=errors.append)
    assert scene.platform == "SETHI" and scene.transform == pytest.approx(tuple(ROTATED)[:6])
    assert len(errors) == 1 and "gone.tif" in str(errors[0])


def test_a_class_that_does_not_implement_the_protocol_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not implement SarArchive"):
        load_archive(str(tmp_path), "pathlib:PurePosixPath")
    with pytest.raises(ConfigError, match="cannot import"):
        load_archive(str(tmp_path), "no_such_package.module:Archive")
