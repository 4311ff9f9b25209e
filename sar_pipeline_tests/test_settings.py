"""Each setting is defined once: what the Launchpad shows is exactly the domain model's fields.

Walks every asset's config class and every configurable resource of the project and compares the
Dagster config schema (field names, defaults, descriptions) with the domain ``Settings`` models it
is built from, so a default or a docstring can never differ between the UI, the CLI and the tests.
"""

import pytest
from dagster._config.field_utils import FIELD_NO_DEFAULT_PROVIDED

from sar_pipeline.definitions import defs
from sar_pipeline.paths import PROJECT_ROOT
from sar_pipeline.settings import Settings, field_rows, settings_models
from sar_pipeline.settings_reference import BEGIN, END, configurable_classes, reference_markdown

CONFIG_CLASSES = configurable_classes(defs())


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


def test_readme_configuration_reference_is_generated_from_the_models():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(BEGIN) : readme.index(END) + len(END)] + "\n"
    assert block == reference_markdown(defs()), (
        "README's settings reference is stale: run `sar-pipeline settings --readme README.md`"
    )
