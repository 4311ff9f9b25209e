"""The one place a stage's settings are defined: a pydantic model per stage, free of Dagster.

Each setting has one name, one default, one unit (in its name or description), one docstring
(the field's ``description``) and one validation, in the domain package that uses it
(``geo``, ``dataset``, ``captioning``, ``diffusion``…). ``defs/`` exposes the same model to the
Launchpad without restating it::

    class TilingConfig(dg.Config, TilingSettings):
        \"\"\"How SAR scenes become tiles.\"\"\"

The domain code takes the domain model; the Dagster class *is* one (``isinstance`` holds), so an
asset passes its ``config`` straight through. Field types stay within what Dagster's config
system accepts (``list`` not ``tuple``, ``Literal`` for closed choices, ``X | None`` for
optional values); ``sar_pipeline_tests/test_settings.py`` walks every asset and resource and
checks that the Launchpad shows exactly the domain model's fields, defaults and descriptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic

from sar_pipeline import paths


class Settings(pydantic.BaseModel):
    """Base of every stage's settings: an unknown key is an error, never silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid")


def read_mapping_file(path: str | Path, what: str = "settings file") -> dict[str, Any]:
    """The mapping a YAML (or JSON) file holds ({} when empty); ConfigError naming the file when it
    cannot be read, is not valid YAML or holds something else than a mapping."""
    import yaml

    from sar_pipeline.errors import ConfigError

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(path, f"cannot read the {what} ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"not valid YAML ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(path, f"a {what} is a mapping of key: value, not {type(values).__name__}")
    return values


def settings_models(cls: type) -> list[type[Settings]]:
    """The domain :class:`Settings` models ``cls`` is built from (most derived first)."""
    return [
        base
        for base in cls.__mro__
        if isinstance(base, type)
        and issubclass(base, Settings)
        and base is not Settings
        and base.__module__.split(".")[:2] != ["sar_pipeline", "defs"]
    ]


def field_rows(model: type[pydantic.BaseModel]) -> list[dict[str, Any]]:
    """One row per field: name, type, default (``None`` where required) and description."""
    rows = []
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            default = info.default_factory()
        else:
            default = None if info.is_required() else info.default
        annotation = info.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        rows.append(
            {
                "name": name,
                "type": type_name,
                "default": default,
                "required": info.is_required(),
                "description": info.description or "",
            }
        )
    return rows


def _shown_default(value: Any) -> str:
    """A default as the reader should see it: machine-specific data paths as ``<data>``."""
    text = repr(value.model_dump() if isinstance(value, pydantic.BaseModel) else value)
    return text.replace(str(paths.data_dir()), "<data>")


def markdown_table(model: type[pydantic.BaseModel]) -> str:
    """The model's fields as a Markdown table (README's configuration section is built from it)."""
    lines = ["| setting | default | meaning |", "|---|---|---|"]
    for row in field_rows(model):
        default = "(required)" if row["required"] else f"`{_shown_default(row['default'])}`"
        text = " ".join(row["description"].split()).replace("|", "\\|")
        lines.append(f"| `{row['name']}` | {default} | {text} |")
    return "\n".join(lines)
