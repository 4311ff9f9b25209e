"""When the model retrains by itself: after a new dataset version, at most once per retraining tick.

A new flight's captions make ``training_dataset`` re-materialise at once (its own condition). Fine-
tuning costs GPU-hours, so ``latent_cache`` and ``sd_model`` do not follow every new version: they
re-materialise at the first tick of ``$SAR_PIPELINE_RETRAIN_CRON`` (cron, UTC; default ``0 2 * * *``,
every night at 02:00) after the dataset changed, both in one run; a tick that finds the dataset or an
earlier training run in progress leaves it to the next tick. No new dataset version since the last
training: nothing runs.
"""

import os

import dagster as dg

#: the environment variable a deployment sets to change when retraining may start (cron, UTC)
RETRAIN_CRON_VARIABLE = "SAR_PIPELINE_RETRAIN_CRON"
DEFAULT_RETRAIN_CRON = "0 2 * * *"


def retrain_cron() -> str:
    """The retraining cron schedule: ``$SAR_PIPELINE_RETRAIN_CRON`` or every night at 02:00 UTC."""
    return os.environ.get(RETRAIN_CRON_VARIABLE) or DEFAULT_RETRAIN_CRON


def retrain_condition(cron: str) -> dg.AutomationCondition:
    """Request the asset when a tick of ``cron`` passes and an upstream asset was updated since the
    asset was last requested or materialised (or is requested in the same evaluation). At a tick
    where an upstream asset is still missing or in progress, the next tick decides."""
    return (
        dg.AutomationCondition.cron_tick_passed(cron, cron_timezone="UTC")
        & dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"retrain after a new dataset, at the next '{cron}' (UTC)")
