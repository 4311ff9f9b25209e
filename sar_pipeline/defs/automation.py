"""The automation-condition sensor: on by default, so the dataset and the model follow new flights.

Dagster evaluates ``automation_condition``s only while a sensor targets the assets and is running.
Its implicit ``default_automation_condition_sensor`` starts stopped; this one starts running, so in
``dg dev`` (or any deployment with the daemon) ``training_dataset`` re-materialises when a flight's
captions land, and ``latent_cache`` + ``sd_model`` retrain on the new dataset at the next retraining
time (``sar_pipeline.defs.training.automation``). Stop it in the UI (Automation tab) to do all of
that by hand.
"""

import dagster as dg

automation = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions every 30 s: training_dataset after new captions, "
    "latent_cache and sd_model at the retraining time after a new dataset version.",
)
