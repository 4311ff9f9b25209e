"""The bad-input corpus (issue 13) through the pipeline's real entry points: each kind gives its declared
outcome with a message naming the input and the reason, every good input beside it is processed, and
nothing partial is visible. The corpus and the outcomes are declared in ``corpus.py``; one good flight
(one good scene beside every bad one) is materialised once for the module."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from sar_pipeline.archive.stac import StacSarArchive
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.geo.manifest import read_manifest
from sar_pipeline_tests.reliability.corpus import FLIGHT, KINDS, TILING, write_corpus

GOOD_TILES = 9  # the good scene's 3 × 3 tiles


def kinds(*tests: str) -> list:
    return [pytest.param(k, id=k.kind) for k in KINDS if k.test.rsplit("::", 1)[1] in tests]


def visible_partial_files(storage: Path) -> list[Path]:
    """What a half-finished write could leave: temporaries (``.<name>.tmp-…``/``.old-``), ``.partial``."""
    return [
        p for p in storage.rglob("*") if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".partial")
    ]


def said(text: str, kind) -> bool:
    text = text.lower()
    return kind.name.lower() in text and all(r.lower() in text for r in kind.reason)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def deployment(corpus, tmp_path_factory):
    """flight-corpus through sar_scenes, sar_tiles and optical_tiles (the good mosaic), once."""
    storage = tmp_path_factory.mktemp("storage")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [FLIGHT])
    resources = {
        "storage": StorageRoot(uri=str(storage)),
        "archive": SarArchiveResource(uri=str(corpus.catalog)),
        "landcover": LandCoverResource(),
        "optical": OpticalResource(kind="mosaic", uri=str(corpus.files["optical-good"])),
    }
    result = dg.materialize(
        [sar_scenes, sar_tiles, optical_tiles],
        partition_key=FLIGHT,
        instance=instance,
        resources=resources,
        run_config={"ops": {"sar_tiles": {"config": TILING}}},
    )
    assert result.success
    return instance, resources, storage, result


def _metadata(result, node: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


@pytest.fixture(scope="module")
def recorded(deployment):
    """Every line the flight's materialisation recorded about a scene (skips, notes, read errors,
    scene summaries of scenes that gave tiles), each prefixed with the scene id where it is keyed by one."""
    instance, _, storage, result = deployment
    scenes, tiles = _metadata(result, "sar_scenes"), _metadata(result, "sar_tiles")
    lines = [line.removeprefix("- ") for line in scenes["skip_reasons"].splitlines()]
    lines += [f"{sid}: {reason}" for sid, reason in tiles["skipped_scenes"].items()]
    lines += [f"{sid}: {e}" for sid, errors in tiles["read_errors"].items() for e in errors]
    for sid, summary in tiles["scene_summaries"].items():
        if summary["note"]:
            lines.append(f"{sid}: {summary['note']}")
        else:
            lines.append(
                f"{sid}: unit {summary['unit']} ({summary['unit_source']}), {summary['tiles_kept']} tiles"
            )
    lines += [
        f"{sid}: {n} non-finite pixels as nodata" for sid, n in tiles["nonfinite_pixels_as_nodata"].items()
    ]
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.level >= 30]
    return lines, logs, tiles


@pytest.mark.parametrize("kind", kinds("test_bad_scene"))
def test_bad_scene(kind, deployment, recorded):
    """A bad scene or STAC item costs that scene: recorded naming it and why; the good scene is tiled."""
    _, _, storage, _ = deployment
    lines, logs, tiles = recorded
    assert any(said(line, kind) for line in lines), (kind, lines)
    rows = read_manifest(storage / "flights" / FLIGHT / "sar_tiles" / "manifest.parquet")
    by_scene = {}
    for row in rows:
        by_scene.setdefault(row["scene_id"], []).append(row)
        assert (storage / row["path"]).is_file()
    assert len(by_scene["good"]) == GOOD_TILES
    summary = tiles["scene_summaries"].get(kind.kind)
    if kind.outcome == "handled":
        assert summary and summary["tiles_kept"] > 0 and len(by_scene[kind.kind]) == summary["tiles_kept"]
    else:
        assert kind.kind not in by_scene or kind.kind == "good"
        # the warning is logged too (skips of sar_scenes and sar_tiles, notes of scenes without tiles)
        assert any(kind.name.lower() in m.lower() for m in logs), kind
    assert not visible_partial_files(storage)


@pytest.mark.parametrize("kind", kinds("test_bad_flight"))
def test_bad_flight(kind, corpus):
    """A collection that cannot be a flight is reported naming it; the good flight is listed once."""
    problems = []
    flights = StacSarArchive(corpus.catalog).list_flights(on_error=problems.append)
    assert [f.flight_id for f in flights] == [FLIGHT]
    assert any(said(str(p), kind) for p in problems), problems


@pytest.mark.parametrize("kind", kinds("test_bad_optical_mosaic"))
def test_bad_optical_mosaic(kind, corpus, deployment):
    """A bad orthophoto: refused up front naming it (the flight's optical tiles stay as they were), or
    recorded per tile, or used correctly."""
    instance, resources, storage, _ = deployment
    manifest = storage / "flights" / FLIGHT / "optical_tiles" / "manifest.parquet"
    before = manifest.read_bytes()
    result = dg.materialize(
        [sar_scenes, sar_tiles, optical_tiles],
        selection=[optical_tiles.key],
        partition_key=FLIGHT,
        instance=instance,
        resources={**resources, "optical": OpticalResource(kind="mosaic", uri=str(corpus.files[kind.kind]))},
        raise_on_error=False,
    )
    try:
        if kind.outcome == "error":
            assert not result.success
            (failure,) = [e for e in result.all_events if e.is_step_failure]
            assert said(str(failure.event_specific_data.error), kind)
            assert manifest.read_bytes() == before  # the previous good tiles stay in place
        else:
            assert result.success
            metadata = _metadata(result, "optical_tiles")
            rows = read_manifest(manifest)
            assert all((storage / r["path"]).is_file() for r in rows)
            if kind.outcome == "skip":
                assert rows == [] and all(said(v, kind) for v in metadata["skipped"].values())
            else:  # the good scene's tiles, fully covered
                assert len(rows) == GOOD_TILES and all(r["coverage_fraction"] == 1.0 for r in rows)
        assert not visible_partial_files(storage)
    finally:  # the module's other tests read the good mosaic's tiles
        manifest.write_bytes(before)


def test_the_corpus_holds_at_least_thirty_kinds_each_with_a_test():
    assert len(KINDS) >= 30 and len({k.kind for k in KINDS}) == len(KINDS)
    here = Path(__file__).read_text()
    for kind in KINDS:
        path, function = kind.test.split("::")
        assert Path(path).name == Path(__file__).name and f"def {function}(" in here, kind
        assert kind.outcome in ("error", "skip", "handled")
    json.dumps([k.__dict__ for k in KINDS])


@pytest.fixture(scope="module")
def definitions():
    from sar_pipeline.definitions import defs

    return defs()


@pytest.mark.parametrize("kind", kinds("test_bad_run_config"))
def test_bad_run_config(kind, corpus, definitions):
    """``sar-pipeline run --config FILE`` refuses the file before anything runs, naming it and the setting."""
    from sar_pipeline.cli import load_run_config, validate_run_config
    from sar_pipeline.errors import ConfigError

    path = corpus.files[kind.kind]
    with pytest.raises(ConfigError) as raised:
        validate_run_config(definitions, load_run_config(path, definitions), path)
    assert said(str(raised.value), kind), str(raised.value)
    assert not (corpus.root / "pwned").exists()


@pytest.mark.parametrize("kind", kinds("test_bad_tiling_config"))
def test_bad_tiling_config(kind, deployment):
    """A GSD off by a unit: every scene refused up front naming the limit (in seconds, not hours); the
    flight fails and its tiles stay as they were."""
    instance, resources, storage, _ = deployment
    manifest = storage / "flights" / FLIGHT / "sar_tiles" / "manifest.parquet"
    before = manifest.read_bytes()
    result = dg.materialize(
        [sar_scenes, sar_tiles],
        selection=[sar_tiles.key],
        partition_key=FLIGHT,
        instance=instance,
        resources=resources,
        run_config={"ops": {"sar_tiles": {"config": {**TILING, "ground_sample_distance_m": 1e-4}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert said(str(failure.event_specific_data.error), kind)
    assert manifest.read_bytes() == before and not visible_partial_files(storage)
