import dagster as dg

from sar_pipeline.definitions import defs


def test_all_definitions_load_and_the_graph_is_wired():
    d = defs()
    keys = {spec.key for spec in d.resolve_all_asset_specs()}
    stages = [
        "sar_scenes",
        "sar_tiles",
        "optical_tiles",
        "captions",
        "training_dataset",
        "latent_cache",
        "sd_model",
        "controlnet_model",
    ]
    assert {dg.AssetKey(k) for k in stages} <= keys
    graph = d.resolve_asset_graph()
    for key in keys:  # every dependency is an asset of the project, no dangling key
        for parent in graph.get(key).parent_keys:
            assert parent in keys, f"{key.to_user_string()} depends on unknown {parent.to_user_string()}"
    assert d.resolve_sensor_def("new_flights")
    flight_job = d.resolve_job_def("flight_job")
    per_flight = {dg.AssetKey(k) for k in ("sar_scenes", "sar_tiles", "optical_tiles", "captions")}
    assert per_flight <= set(flight_job.asset_layer.executable_asset_keys)
    # the main job's later stages, run by `sar-pipeline run` after the flights
    assert (
        dg.AssetKey("training_dataset") in d.resolve_job_def("dataset_job").asset_layer.executable_asset_keys
    )
    training = set(d.resolve_job_def("training_job").asset_layer.executable_asset_keys)
    assert {dg.AssetKey("latent_cache"), dg.AssetKey("sd_model"), dg.AssetKey("controlnet_model")} <= training
    assert dg.AssetKey("sar_clip") in training  # the evaluation group runs with training
    assert set(d.resources) >= {
        "storage",
        "archive",
    }


def test_the_code_location_loads_without_torch_diffusers_or_transformers():
    # every launched run (per-flight ones included) loads the code location in a fresh process:
    # torch alone takes seconds to import, so the stages that need it import it when they run
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; from sar_pipeline.definitions import defs; defs(); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'diffusers', 'transformers'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
