"""Each setting is defined once: what the Launchpad shows is exactly the domain model's fields.

Walks every asset's config class and every configurable resource of the project and compares the
Dagster config schema (field names, defaults, descriptions) with the domain ``Settings`` models it
is built from, so a default or a docstring can never differ between the UI, the CLI and the tests.
"""

import inspect

import dagster as dg
import pytest
from dagster._config.field_utils import FIELD_NO_DEFAULT_PROVIDED

from sar_pipeline.definitions import defs
from sar_pipeline.settings import Settings, field_rows, settings_models


def _asset_config_classes() -> dict[str, type]:
    classes = {}
    for assets_def in defs().resolve_asset_graph().assets_defs:
        if not isinstance(assets_def, dg.AssetsDefinition) or not assets_def.is_executable:
            continue
        fn = getattr(assets_def.op.compute_fn, "decorated_fn", None)
        if fn is None:
            continue
        param = inspect.signature(fn).parameters.get("config")
        if param is not None and isinstance(param.annotation, type):
            classes[assets_def.op.name] = param.annotation
    return classes


def _resource_classes() -> dict[str, type]:
    return {
        key: type(resource)
        for key, resource in defs().resources.items()
        if isinstance(resource, dg.ConfigurableResource)
    }


CONFIG_CLASSES = {
    **{f"asset {k}": v for k, v in _asset_config_classes().items()},
    **{f"resource {k}": v for k, v in _resource_classes().items()},
}

def test_every_stage_with_settings_is_walked():
    assert any(name.startswith("asset ") for name in CONFIG_CLASSES)
    assert {"resource storage", "resource archive"} <= set(CONFIG_CLASSES)


@pytest.mark.parametrize("where", sorted(CONFIG_CLASSES))
def test_launchpad_fields_are_the_domain_models(where):
    cls = CONFIG_CLASSES[where]
    models = settings_models(cls)
    assert models, (
        f"{where}: {cls.__name__} is not built from a domain Settings model (sar_pipeline.settings)"
    )
    own = set(vars(cls).get("__annotations__", {}))
    assert not own, (
        f"{where}: {cls.__name__} declares its own fields {sorted(own)}; define them in {models[0].__name__}"
    )
    schema_fields = cls.to_config_schema().as_field().config_type.fields
    domain = {row["name"]: row for m in reversed(models) for row in field_rows(m)}
    assert set(schema_fields) == set(domain), f"{where}: Launchpad fields differ from {models[0].__name__}"
    for name, field in schema_fields.items():
        row = domain[name]
        assert (field.description or "") == row["description"], f"{where}.{name}: description differs"
        assert row["description"], f"{where}.{name}: no docstring (Field description)"
        if field.default_provided and field.default_value is not FIELD_NO_DEFAULT_PROVIDED:
            shown = field.default_value
            expected = row["default"]
            if isinstance(expected, Settings):
                expected = expected.model_dump()
            assert shown == expected, f"{where}.{name}: Launchpad default {shown!r} != domain {expected!r}"
