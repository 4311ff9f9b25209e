"""kill -9 during training (tiny model, 6 steps, a checkpoint every 2), then resume.

Each trial SIGKILLs the trainer at a seeded random point — just before one of its file-system writes
in the run folder (checkpoints, sample grids, TensorBoard, losses), or after a random delay (inside
safetensors or the model save) — then starts it again on the same run folder and checks what a
reader finds at the kill, how much work the resume lost, and that the finished run is the
uninterrupted one (docs/reliability.md, "Crash safety")."""

from __future__ import annotations

import random
import re
import shutil

from sar_pipeline.diffusion.checkpoint import check_checkpoint, list_checkpoints
from sar_pipeline_tests.diffusion.conftest import CHILD_ENV, tiny_config, tiny_world  # noqa: F401
from sar_pipeline_tests.reliability.killpoints import (
    KillServer,
    draw_kill_point,
    hidden,
    snapshot,
)

SEED = 20261128
TRIALS = 10
TIMED_EVERY = 4
STEPS, CHECKPOINT_EVERY = 6, 2
STAGE = "sar_pipeline_tests.reliability.stages:train_run"
PRELOAD = ["sar_pipeline.diffusion.train", "sar_pipeline_tests.reliability.stages:import_training"]
#: TensorBoard's writer flushes on a timer: its writes are not counted (their number varies)
NOT_COUNTED = ("/logs/",)

#: files that name their own run folder or a time (JSON summaries, TensorBoard event files): compared
#: by content elsewhere, not byte for byte with another run folder's
_RUN_SPECIFIC = re.compile(r"(^|/)(checkpoint\.json|final\.json|train_config\.json)$|^logs/")


def _comparable(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if not _RUN_SPECIFIC.search(k)}


def _steps_done(log: str) -> int:
    """Optimizer steps the trainer had finished (it prints ``step k/N, loss …`` after each; tqdm's
    carriage returns share its lines)."""
    done = re.findall(r"\bstep (\d+)/\d+, loss", log)
    return int(done[-1]) if done else 0


def _resumed_at(log: str) -> int:
    """The step a run resumed from (0: it started afresh)."""
    found = re.search(r"\bresumed from \S+: step (\d+)", log)
    return int(found.group(1)) if found else 0


def test_kill9_during_training_then_resume(tiny_world, tmp_path):  # noqa: F811
    def config(name: str) -> str:
        path = tmp_path / f"{name}.json"
        tiny_config(
            tiny_world,
            tmp_path / name,
            max_train_steps=STEPS,
            checkpoint_every_steps=CHECKPOINT_EVERY,
            deterministic=True,
            validation_loss_timesteps=[],  # no held-out loss (its own test covers it): cheaper checkpoints
        ).write(path)
        return str(path)

    env = {**CHILD_ENV, "OMP_NUM_THREADS": "1"}
    with KillServer(PRELOAD, tmp_path / "work", env=env) as server:
        dry = server.finish(STAGE, tmp_path / "straight", exclude=NOT_COUNTED, config=config("straight"))
        reference = _comparable(snapshot(tmp_path / "straight"))
        assert (
            f"checkpoints/checkpoint-{STEPS:08d}/pipeline/unet/diffusion_pytorch_model.safetensors"
            in reference
        )
        assert any(".partial" in w and "checkpoint.json" in w for w in dry.writes)

        rng = random.Random(SEED)
        timed_trials = TRIALS // TIMED_EVERY
        strata = list(range(TRIALS - timed_trials))
        rng.shuffle(strata)
        lines = []
        for trial in range(TRIALS):
            name = f"trial-{trial}"
            run = tmp_path / name
            timed = trial % TIMED_EVERY == TIMED_EVERY - 1
            stratum = (0, 1) if timed else (strata.pop(), TRIALS - timed_trials)
            point = draw_kill_point(rng, dry, timed, stratum)
            killed = server.run(STAGE, run, **point, exclude=NOT_COUNTED, config=config(name))
            done = _steps_done(killed.log)
            what = f"trial {trial}: {point}, killed {killed.landed(run)} after step {done}"
            assert killed.killed or timed, what
            # at the kill: every checkpoint a reader lists is complete and the uninterrupted run's, and
            # every other visible file (sample grids, losses) is whole and the uninterrupted run's
            for folder in list_checkpoints(run):
                check_checkpoint(folder)
            seen = _comparable({k: v for k, v in snapshot(run).items() if not hidden(k)})
            assert not [k for k, v in seen.items() if reference.get(k) != v], what

            resumed = server.finish(STAGE, run, config=config(name))
            start = _resumed_at(resumed.log)
            lines.append(f"{what}; resumed from step {start}")
            # the resume lost at most one checkpoint interval of finished steps
            assert start <= done and done - start <= CHECKPOINT_EVERY, lines[-1]
            # and ends where the uninterrupted run ends: same checkpoints, weights, samples and losses,
            # nothing of the killed process left (.partial folders, temporaries)
            after = snapshot(run)
            assert not [k for k in after if hidden(k)], lines[-1]
            assert _comparable(after) == reference, lines[-1]
            assert [c.name for c in list_checkpoints(run)] == [
                c.name for c in list_checkpoints(tmp_path / "straight")
            ]
            shutil.rmtree(run)
    print("\n".join(lines))
