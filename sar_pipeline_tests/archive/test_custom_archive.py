"""Another archive API behind the SarArchive protocol, loaded by name as the ``archive`` resource does.

``ManifestArchive`` stands for a user's own archive service (ONERA's SETHI in the paper): here a
JSON manifest ``{"flights": {flight_id: [{"scene_id", "path", "incidence_angle_deg"}]}}``. A user
writes such a class in their own package, registers it as an entry point of the group
``sar_pipeline.archives`` in that package's ``pyproject.toml`` and sets the resource's
``archive_class`` to the entry point's name (``options`` are passed as keyword arguments).

Run config must never choose arbitrary code: ``archive_class: "os:system"`` with a command as
``uri`` once ran the command. Anything that is not a registered plug-in is refused before import,
and a registered one that is not a SarArchive class is refused before it is called.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import rasterio

from sar_pipeline.archive import SarArchive, load_archive
from sar_pipeline.archive.protocol import FlightRecord, SceneRecord
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.errors import ArchiveError, ConfigError, SarPipelineError
from sar_pipeline_tests.archive.conftest import ROTATED, write_geotiff
from sar_pipeline_tests.plugins import register_archive_plugin


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


def test_a_registered_custom_archive_is_loaded_by_its_entry_point_name(tmp_path, monkeypatch):
    register_archive_plugin(monkeypatch, tmp_path / "site", "sethi", f"{__name__}:ManifestArchive")
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
    archive = load_archive(str(manifest), "sethi", platform="SETHI")
    assert isinstance(archive, ManifestArchive) and isinstance(archive, SarArchive)
    assert [f.flight_id for f in archive.list_flights()] == ["sethi-2019-03"]
    errors: list[SarPipelineError] = []
    (scene,) = archive.list_scenes("sethi-2019-03", on_error=errors.append)
    assert scene.platform == "SETHI" and scene.transform == pytest.approx(tuple(ROTATED)[:6])
    assert len(errors) == 1 and "gone.tif" in str(errors[0])
    # the entry point's module:Class value names the same plug-in
    assert isinstance(load_archive(str(manifest), f"{__name__}:ManifestArchive"), ManifestArchive)


def test_the_stac_archive_is_registered_by_our_own_package(small_demo):
    from sar_pipeline.archive.stac import StacSarArchive

    assert isinstance(load_archive(str(small_demo.catalog_path)), StacSarArchive)
    assert isinstance(load_archive(str(small_demo.catalog_path), "stac"), StacSarArchive)
    # older run configs name the class itself
    old = load_archive(str(small_demo.catalog_path), "sar_pipeline.archive.stac:StacSarArchive")
    assert isinstance(old, StacSarArchive)


@pytest.mark.parametrize(
    "archive_class, uri",
    [
        ("os:system", "touch {marker}"),
        ("builtins:eval", "__import__('pathlib').Path({marker!r}).touch()"),
        ("builtins:exec", "__import__('pathlib').Path({marker!r}).touch()"),
        ("subprocess:getoutput", "touch {marker}"),
        ("subprocess:Popen", "touch {marker}"),
        ("posix:system", "touch {marker}"),
    ],
)
def test_run_config_cannot_choose_code_to_run(tmp_path, archive_class, uri):
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match=r"archive\.archive_class.*not an installed SarArchive plug-in"):
        load_archive(uri.format(marker=str(marker)), archive_class)
    assert not marker.exists()


def test_the_attack_through_the_archive_resource_fails_the_run_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", ["flight-1"])
    result = dg.materialize(
        [sar_scenes],
        instance=instance,
        partition_key="flight-1",
        resources={
            "archive": SarArchiveResource(uri=f"touch {marker}", archive_class="os:system"),
            "storage": StorageRoot(uri=str(tmp_path / "storage")),
        },
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "archive.archive_class='os:system'" in failure.step_failure_data.error.to_string()
    assert not marker.exists()


def test_an_unregistered_module_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_archive.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Archive: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="not an installed SarArchive plug-in"):
        load_archive("x", "evil_archive:Archive")
    # a valid SarArchive class that is not registered is refused too
    with pytest.raises(ConfigError, match="not an installed SarArchive plug-in"):
        load_archive("x", f"{__name__}:ManifestArchive")
    assert not marker.exists()


def test_a_registered_plugin_that_is_not_a_sar_archive_class_is_never_called(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    register_archive_plugin(monkeypatch, tmp_path / "a", "shell", "os:system")
    register_archive_plugin(monkeypatch, tmp_path / "b", "path", "pathlib:PurePosixPath")
    register_archive_plugin(monkeypatch, tmp_path / "c", "missing", "no_such_package.module:Archive")
    with pytest.raises(ConfigError, match="shell = os:system is not a class implementing SarArchive"):
        load_archive(f"touch {marker}", "shell")
    with pytest.raises(ConfigError, match="is not a class implementing SarArchive"):
        load_archive(str(tmp_path), "path")
    with pytest.raises(ConfigError, match="cannot import plug-in missing"):
        load_archive(str(tmp_path), "missing")
    assert not marker.exists()
