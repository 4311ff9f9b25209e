"""What the UI shows of the definitions: one code-location name, readable descriptions, checks per flight."""

import re
import tomllib

import yaml

from sar_pipeline import paths
from sar_pipeline.definitions import defs as load_defs

CODE_SPAN = re.compile(r"`[^`]*`")
TAG_LIKE = re.compile(r"<[A-Za-z_][^<>]*>")


def test_the_code_location_has_one_name_whichever_command_starts_the_ui():
    pyproject = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())
    name = pyproject["tool"]["dg"]["project"]["code_location_name"]  # what `dg dev` calls it
    for workspace in ("workspace.yaml", "docker/workspace.yaml"):
        (entry,) = yaml.safe_load((paths.PROJECT_ROOT / workspace).read_text())["load_from"]
        (target,) = entry.values()
        assert target["location_name"] == name, workspace


def test_asset_descriptions_keep_their_placeholders_in_markdown():
    # the UI renders descriptions as Markdown: a bare <version> is an HTML tag and disappears
    for spec in load_defs().resolve_all_asset_specs():
        prose = CODE_SPAN.sub("", spec.description or "")
        assert not TAG_LIKE.search(prose), (
            f"{spec.key.to_user_string()}: {TAG_LIKE.search(prose)[0]} outside `…`"
        )


def test_per_flight_checks_record_their_flight():
    defs = load_defs()
    graph = defs.resolve_asset_graph()
    per_flight = [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None]
    assert len(per_flight) == 4
    checks = [c for c in graph.asset_check_keys if c.asset_key in per_flight]
    assert len(checks) >= 8
    for key in checks:
        assert graph.get_check_spec(key).partitions_def is not None, key.to_user_string()
