"""What a killed dataset build leaves under a name nobody writes again is removed, not kept forever.

The writer of a file or folder removes what killed writers of the *same* target left beside it; a
dataset build killed while writing a shard whose inputs then change (another set of flights) never
has that target written again, and a version killed while being deleted by retention is hidden
under a ``.deleting-`` name nobody looks at. Retention (which ``training_dataset`` runs after each
build) removes both once they can no longer be in use."""

from __future__ import annotations

import time
from pathlib import Path

from sar_pipeline.retention import SHARD_GRACE_S, prune_dataset_versions
from sar_pipeline_tests.reliability.killpoints import KillServer, hidden, snapshot
from sar_pipeline_tests.reliability.test_kill_dataset import PRELOAD, SETTINGS, STAGE, write_flights


def arguments(storage, flights, keep_versions=5):
    return {
        "storage": str(storage),
        "flight_ids": flights,
        "settings": {**SETTINGS, "keep_versions": keep_versions},
    }


def hidden_leftovers(root) -> list[str]:
    """The hidden entries (``.<name>.tmp-…``, ``.<name>.deleting-…``) holding files under ``root``."""
    found = set()
    for relative in snapshot(root):
        parts = Path(relative).parts
        if hidden(relative):
            first = next(i for i, part in enumerate(parts) if part.startswith("."))
            found.add("/".join(parts[: first + 1]))
    return sorted(found)


def first_write(outcome, *parts: str) -> int:
    """The number (1-based) of the first write of ``outcome`` whose description holds every part."""
    return next(i for i, w in enumerate(outcome.writes, 1) if all(p in w for p in parts))


def test_leftovers_whose_target_is_never_written_again_are_removed(tmp_path):
    later = time.time() + 2 * SHARD_GRACE_S
    with KillServer(PRELOAD, tmp_path / "work") as server:
        dry = tmp_path / "dry"
        write_flights(dry)
        both = server.finish(STAGE, dry, **arguments(dry, ["flight-a", "flight-b"]))
        pruning = server.finish(STAGE, dry, **arguments(dry, ["flight-a"], keep_versions=1))

        # a build of both flights killed just before a shard of flight-b is renamed into place, then
        # a build of flight-a alone: flight-b's temporary (a whole Parquet file) has no writer any more
        root = tmp_path / "stranded"
        write_flights(root)
        at = first_write(both, "os.rename", "shards/flight-b/.", ".parquet.tmp-")
        assert server.run(STAGE, root, kill_at_event=at, **arguments(root, ["flight-a", "flight-b"])).killed
        server.finish(STAGE, root, **arguments(root, ["flight-a"]))
        assert any("shards/flight-b/." in k for k in hidden_leftovers(root))

        # a version being deleted by retention (keep_versions=1) when the process is killed
        deleted = tmp_path / "deleted"
        write_flights(deleted)
        server.finish(STAGE, deleted, **arguments(deleted, ["flight-a", "flight-b"]))
        at = first_write(pruning, "shutil.rmtree", ".deleting-")
        killed = server.run(
            STAGE, deleted, kill_at_event=at, **arguments(deleted, ["flight-a"], keep_versions=1)
        )
        assert killed.killed and ".deleting-" in killed.landed(deleted)
        server.finish(STAGE, deleted, **arguments(deleted, ["flight-a"], keep_versions=1))

    # the next build's retention removes the hidden version at once (nothing reads a .deleting- name)
    assert hidden_leftovers(deleted) == []
    # and a dead writer's temporary once it is older than a build could take
    assert prune_dataset_versions(root, 5, now=time.time()).deleted == []
    assert any("shards/flight-b/." in k for k in hidden_leftovers(root))  # young: kept
    prune_dataset_versions(root, 5, now=later)
    assert hidden_leftovers(root) == []
