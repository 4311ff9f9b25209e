import dagster as dg

from sar_pipeline.definitions import defs


def test_all_definitions_load_and_the_graph_is_wired():
    d = defs()
    keys = {spec.key for spec in d.resolve_all_asset_specs()}
    assert dg.AssetKey("sar_scenes") in keys
    graph = d.resolve_asset_graph()
    for key in keys:  # every dependency is an asset of the project, no dangling key
        for parent in graph.get(key).parent_keys:
            assert parent in keys, f"{key.to_user_string()} depends on unknown {parent.to_user_string()}"
    assert d.resolve_sensor_def("new_flights")
    flight_job = d.resolve_job_def("flight_job")
    assert dg.AssetKey("sar_scenes") in flight_job.asset_layer.executable_asset_keys
    assert set(d.resources) >= {
        "storage",
        "archive",
    }
