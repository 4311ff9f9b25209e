import dagster as dg
import pytest

from sar_pipeline.dataset import current_version, dataset_info, load_dataset_table
from sar_pipeline.dataset.write import TrainingDatasetSettings
from sar_pipeline.defs.dataset import checks
from sar_pipeline.defs.dataset.assets import training_dataset
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline_tests.dataset.fixtures import make_flight

CHECKS = [
    checks.training_dataset_no_spatial_leakage,
    checks.training_dataset_rows_complete,
    checks.training_dataset_splits_non_empty,
]
RUN_CONFIG = {
    "ops": {
        "training_dataset": {
            "config": {
                "block_size_m": 400.0,
                "train_fraction": 0.5,
                "validation_fraction": 0.2,
                "test_fraction": 0.3,
                "row_group_size": 8,
                "mosaic_tiles": 4,
            }
        }
    }
}

# The per-flight upstream assets as they appear in the graph (their code lives in other areas).
UPSTREAM = [
    dg.AssetSpec(key, partitions_def=flight_partitions, group_name="flights")
    for key in ("sar_tiles", "optical_tiles", "captions")
]


def _materialize(instance, root):
    return dg.materialize(
        [training_dataset, *CHECKS, *UPSTREAM],
        selection=[training_dataset.key],
        instance=instance,
        resources={"storage": StorageRoot(uri=str(root))},
        run_config=RUN_CONFIG,
    )


def test_materialises_from_every_captioned_flight(tmp_path):
    make_flight(tmp_path, "flight-a", rows=9, cols=9, rotation_deg=31.0)
    make_flight(tmp_path, "flight-b", rows=3, cols=4, origin=(500_900.0, 4_800_400.0))
    with dg.instance_for_test() as instance:
        # flight-c is known to Dagster but not captioned yet: left out, not an error
        instance.add_dynamic_partitions(flight_partitions.name, ["flight-a", "flight-b", "flight-c"])
        result = _materialize(instance, tmp_path)
        assert result.success
        mat = result.asset_materializations_for_node("training_dataset")[0]
        meta = mat.metadata
        version = meta["dataset_version"].value
        assert version == current_version(tmp_path)
        assert meta["flights"].value == ["flight-a", "flight-b"]
        total = meta["row_count"].value
        assert total == sum(meta[f"row_count_{s}"].value for s in ("train", "validation", "test"))
        assert total + meta["dropped_guard_tiles"].value == 93
        assert "| flight-a | X |" in meta["counts"].value
        # 16-px tiles at 8 m: 128 m on the ground; 400 m blocks are three tiles wide, no advice
        assert meta["median_tile_side_m"].value == pytest.approx(128.0, rel=1e-3)
        assert meta["block_size_advice"].value.startswith("none")
        assert "data:image/" in meta["mosaic"].value
        assert "data:image/" in meta["caption_lengths"].value
        assert "| field |" in meta["top_words"].value
        assert mat.tags.get("dagster/data_version") == version
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        # the separate checks, and the saturation check the asset evaluates itself
        assert set(evaluations) == {c.check_key.name for c in CHECKS} | {"training_dataset_saturation"}
        assert all(e.passed for e in evaluations.values()), evaluations

        assert meta["shards_written"].value == 2 and meta["shards_reused"].value == 0
        files = [f for split_files in dataset_info(tmp_path)["files"].values() for f in split_files]
        first = {f: (tmp_path / f).read_bytes() for f in files}
        again = _materialize(instance, tmp_path)
        assert (
            again.asset_materializations_for_node("training_dataset")[0].metadata["dataset_version"].value
            == version
        )
        assert (
            again.asset_materializations_for_node("training_dataset")[0].metadata["shards_reused"].value == 2
        )
        for f, data in first.items():
            assert (tmp_path / f).read_bytes() == data
        assert load_dataset_table(tmp_path, split="train").num_rows == meta["row_count_train"].value


def _one_flight_dataset(root, **settings):
    """training_dataset over one small flight, with ``settings`` over RUN_CONFIG's."""
    make_flight(root, "flight-a", rows=3, cols=3)
    config = {**RUN_CONFIG["ops"]["training_dataset"]["config"], **settings}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(flight_partitions.name, ["flight-a"])
        return dg.materialize(
            [training_dataset, *UPSTREAM],
            selection=[training_dataset.key],
            instance=instance,
            resources={"storage": StorageRoot(uri=str(root))},
            run_config={"ops": {"training_dataset": {"config": config}}},
            raise_on_error=False,
        )


def test_the_amplitude_normalisation_is_a_run_config_setting(tmp_path):
    result = _one_flight_dataset(tmp_path, normalisation="amplitude")
    assert result.success
    meta = result.asset_materializations_for_node("training_dataset")[0].metadata
    assert meta["normalisation"].value == "amplitude" and "μ + 3σ" in meta["radiometry"].value
    table = load_dataset_table(tmp_path, columns=["normalisation", "amplitude_scale"])
    assert set(table.column("normalisation").to_pylist()) == {"amplitude"}
    assert all(scale > 0 for scale in table.column("amplitude_scale").to_pylist())
    (check,) = result.get_asset_check_evaluations()
    assert check.metadata["normalisation"].value == "amplitude"


def test_a_saturated_dataset_fails_its_check_with_the_hint_of_its_normalisation(tmp_path):
    # a fixed range far above every pixel: all of them clipped at the low end
    result = _one_flight_dataset(tmp_path, db_min=200.0, db_max=210.0)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["normalisation"].value == "db"
    assert "db_min/db_max (fixed now at 200…210 dB) wider" in check.metadata["advice"].value


def test_the_saturation_hint_names_the_settings_of_the_normalisation_in_force():
    amplitude = TrainingDatasetSettings(normalisation="amplitude").saturation_advice()
    assert "normalisation 'amplitude'" in amplitude and "do not apply" in amplitude
    assert "bit_depth 16" in amplitude and "normalisation 'db'" in amplitude
    fixed = TrainingDatasetSettings(db_min=-25, db_max=5).saturation_advice()
    assert "db_min/db_max (fixed now at -25…5 dB) wider" in fixed
    pooled = TrainingDatasetSettings().saturation_advice()
    assert pooled.startswith("widen training_dataset percentile_low/percentile_high (0.5/99.5 now)")


def test_fails_clearly_when_no_flight_has_captions(tmp_path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(flight_partitions.name, ["flight-a"])
        with pytest.raises(Exception, match="no flight has captions yet"):
            _materialize(instance, tmp_path)


def test_rematerialises_on_its_own_when_a_flight_is_captioned(tmp_path):
    upstream = [
        dg.AssetSpec("sar_tiles", partitions_def=flight_partitions),
        dg.AssetSpec("optical_tiles", partitions_def=flight_partitions),
        dg.AssetSpec("captions", partitions_def=flight_partitions),
    ]
    defs = dg.Definitions(
        assets=[*upstream, training_dataset], resources={"storage": StorageRoot(uri=str(tmp_path))}
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(flight_partitions.name, ["flight-a", "flight-b"])

    def tick(cursor=None):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

    result = tick()
    assert result.get_num_requested(training_dataset.key) == 0  # nothing captioned yet

    # flight-a's tiles land: not yet (captions pending)
    for key in ("sar_tiles", "optical_tiles"):
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="flight-a"))
    result = tick(result.cursor)
    assert result.get_num_requested(training_dataset.key) == 0

    # flight-a's captions land: the dataset is requested, though flight-b is still missing
    instance.report_runless_asset_event(dg.AssetMaterialization("captions", partition="flight-a"))
    result = tick(result.cursor)
    assert result.get_num_requested(training_dataset.key) == 1
    instance.report_runless_asset_event(dg.AssetMaterialization("training_dataset"))
    result = tick(result.cursor)
    assert result.get_num_requested(training_dataset.key) == 0

    # a new flight is added and captioned: requested again
    instance.add_dynamic_partitions(flight_partitions.name, ["flight-c"])
    instance.report_runless_asset_event(dg.AssetMaterialization("captions", partition="flight-c"))
    result = tick(result.cursor)
    assert result.get_num_requested(training_dataset.key) == 1


def test_wired_into_the_project_definitions():
    from sar_pipeline.definitions import defs

    definitions = defs()
    graph = definitions.resolve_asset_graph()
    node = graph.get(training_dataset.key)
    assert node.partitions_def is None
    assert node.parent_keys == {dg.AssetKey(k) for k in ("captions", "sar_tiles", "optical_tiles")}
    for parent in node.parent_keys:
        assert graph.get(parent).partitions_def == flight_partitions
        mapping = graph.get_partition_mapping(training_dataset.key, parent)
        assert isinstance(mapping, dg.AllPartitionMapping)
    assert {c.name for c in graph.asset_check_keys if c.asset_key == training_dataset.key} == {
        c.check_key.name for c in CHECKS
    } | {"training_dataset_saturation"}
    assert definitions.resolve_job_def("dataset_job") is not None
