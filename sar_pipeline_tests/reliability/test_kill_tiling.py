"""kill -9 during a flight's stages (sar_scenes → sar_tiles → optical_tiles → captions), then re-run.

Each trial SIGKILLs the process materialising the flight at a seeded random point — just before one
of its file-system writes under the storage root, drawn among every write a run makes, or after a
random delay (inside a native writer) — and checks what a reader finds at that moment and after the
re-run (docs/reliability.md, "Crash safety")."""

from __future__ import annotations

import pytest

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline_tests.reliability.killpoints import KillServer, Trials
from sar_pipeline_tests.reliability.stages import flight_arguments

SEED = 20261128
TRIALS = 10
STAGE = "sar_pipeline_tests.reliability.stages:materialise_flight"
PRELOAD = [
    "sar_pipeline_tests.reliability.stages",
    "sar_pipeline.defs.flights.assets",
    "sar_pipeline.defs.geo.assets",
    "sar_pipeline.defs.captions.assets",
]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_demo_archive(
        tmp_path_factory.mktemp("archive") / "demo", flights=1, seed=3, settings=SMALL_DEMO_SETTINGS
    )


def test_kill9_during_the_flight_stages_then_rerun(archive, tmp_path):
    flight = archive.flight_ids[0]

    def arguments(storage):
        return flight_arguments(archive, storage, flight)

    with KillServer(PRELOAD, tmp_path / "work") as server:
        trials = Trials(
            server,
            STAGE,
            arguments,
            prepare=lambda root: None,  # the inputs are the archive's
            published=[f"flights/{flight}/sar_tiles", f"flights/{flight}/optical_tiles"],
            seed=SEED,
        )
        reference, dry = trials.reference(tmp_path / "reference")
        assert any("sar_tiles" in w for w in dry["empty"].writes)
        lines = trials.run(tmp_path / "storage", TRIALS, reference, dry)
    print("\n".join(lines))
