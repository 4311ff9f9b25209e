"""The automation the daemon runs: the sensor is on by default, the model retrains after new data.

Evaluated with Dagster's testing API (``evaluate_automation_conditions``) over the project's real
definitions; materialisations are reported to the instance (the stages themselves run elsewhere).
"""

import datetime as dt

import dagster as dg

from sar_pipeline.definitions import defs as load_defs
from sar_pipeline.defs.training.automation import DEFAULT_RETRAIN_CRON

TRAINING = {dg.AssetKey("latent_cache"), dg.AssetKey("sd_model")}


def _materialised(instance: dg.DagsterInstance, *names: str) -> None:
    for name in names:
        instance.report_runless_asset_event(dg.AssetMaterialization(name))


def _requested(result) -> set[dg.AssetKey]:
    return {key for key in TRAINING if result.get_num_requested(key)}


def test_automation_sensor_runs_by_default_and_targets_the_dataset_and_training():
    defs = load_defs()
    sensor = defs.resolve_sensor_def("automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    targeted = sensor.asset_selection.resolve(graph)
    for name in ("training_dataset", "latent_cache", "sd_model"):
        assert dg.AssetKey(name) in targeted
        assert graph.get(dg.AssetKey(name)).automation_condition is not None
    assert DEFAULT_RETRAIN_CRON == "0 2 * * *"


def test_model_retrains_once_at_the_next_retraining_time_after_a_new_dataset():
    defs = load_defs()
    selection = dg.AssetSelection.assets("training_dataset", "latent_cache", "sd_model")
    instance = dg.DagsterInstance.ephemeral()
    day = dt.datetime(2030, 5, 6, tzinfo=dt.UTC)

    def evaluate(when: dt.datetime, cursor):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, evaluation_time=when, cursor=cursor
        )

    _materialised(instance, "training_dataset", "latent_cache", "sd_model")  # a trained deployment
    result = evaluate(day.replace(hour=1), None)
    result = evaluate(day.replace(hour=2, minute=5), result.cursor)
    assert _requested(result) == set(), "nothing new since the last training: no retraining"

    # a new flight's captions made a new dataset version during the day
    _materialised(instance, "training_dataset")
    result = evaluate(day.replace(hour=15), result.cursor)
    assert _requested(result) == set(), "the model waits for the retraining time"
    result = evaluate(day.replace(hour=23, minute=59), result.cursor)
    assert _requested(result) == set()

    next_night = day + dt.timedelta(days=1, hours=2, minutes=1)
    result = evaluate(next_night, result.cursor)
    assert _requested(result) == TRAINING, "both retrain at 02:00 after the new dataset"

    # requested once: later evaluations do not ask again, whether or not the run has finished
    result = evaluate(next_night + dt.timedelta(minutes=5), result.cursor)
    assert _requested(result) == set()
    _materialised(instance, "latent_cache", "sd_model")
    result = evaluate(next_night + dt.timedelta(days=1), result.cursor)
    assert _requested(result) == set(), "no new dataset the next day: no retraining"
