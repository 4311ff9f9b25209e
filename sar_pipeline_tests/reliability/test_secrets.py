"""No credential reaches a log (issue 13, security): secrets planted in the environment (S3 keys, the
Postgres password) and in hrefs (``user:password@``, a pre-signed URL's ``X-Amz-Credential`` and
``X-Amz-Signature``) go through a real materialisation of the per-flight stages and appear in no
event-log entry, metadata value, log line, captured output or file the stages write."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.hrefs import REDACTED, redact, redact_text


def _secret(name: str) -> str:
    return f"{name}{secrets.token_hex(10)}"


#: what a deployment has in its environment (the S3 credentials, the Postgres password of dagster.yaml)
ENV_SECRETS = {
    "AWS_ACCESS_KEY_ID": _secret("AKIAPLANTED"),
    "AWS_SECRET_ACCESS_KEY": _secret("awssecret"),
    "AWS_SESSION_TOKEN": _secret("awstoken"),
    "DAGSTER_POSTGRES_PASSWORD": _secret("pgpassword"),
}
#: what a catalogue's hrefs carry
HREF_SECRETS = {
    "url password": _secret("urlpassword"),
    "X-Amz-Credential": _secret("amzcredential"),
    "X-Amz-Signature": _secret("amzsignature"),
    "sig": _secret("sassig"),
}
SECRETS = {**ENV_SECRETS, **HREF_SECRETS}
#: where the pre-signed scene lies: an allowed root on the loopback's discard port (refused at once,
#: so the scene fails to open quickly, as an expired URL would)
LAKE = "https://127.0.0.1:9/lake/"


def _presigned(path: str, user: str = "reader") -> str:
    return (
        f"https://{user}:{HREF_SECRETS['url password']}@{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={HREF_SECRETS['X-Amz-Credential']}%2F20240601%2Feu-west-3%2Fs3%2Faws4_request"
        f"&X-Amz-Signature={HREF_SECRETS['X-Amz-Signature']}"
    )


def plant_hrefs(flight_dir: Path) -> dict[str, str]:
    """Add secret-bearing hrefs to a demo flight: a pre-signed thumbnail on a good scene, a pre-signed
    scene without heading under an allowed root, one outside every root, and a local raster's path
    with a signature query. Returns scene id → what was planted."""
    collection_path = flight_dir / "collection.json"
    collection = json.loads(collection_path.read_text())
    item_links = [link for link in collection["links"] if link["rel"] == "item"]
    good_path = (flight_dir / item_links[0]["href"]).resolve()
    good = json.loads(good_path.read_text())
    good["assets"]["thumbnail"] = {
        "href": _presigned("127.0.0.1:9/thumbs/quicklook.png"),
        "type": "image/png",
        "roles": ["thumbnail"],
    }
    good_path.write_text(json.dumps(good))
    data_key = next(k for k, a in good["assets"].items() if "data" in a.get("roles", []))
    local_name = Path(good["assets"][data_key]["href"]).name
    planted = {
        "presigned-scene": _presigned(LAKE.removeprefix("https://") + "flight/presigned.tif"),
        "outside-roots": f"https://mallory:{HREF_SECRETS['url password']}@evil.example.org/x.tif"
        f"?sig={HREF_SECRETS['sig']}",
        "local-signed": f"../{good_path.parent.name}/{local_name}?X-Amz-Signature={HREF_SECRETS['X-Amz-Signature']}",
    }
    for scene_id, href in planted.items():
        item = json.loads(json.dumps(good))
        item["id"] = scene_id
        item["properties"].pop("sar_pipeline:heading_deg", None)  # an orientation warning names the scene
        item["assets"] = {"data": {**good["assets"][data_key], "href": href}}
        item["links"] = [link for link in item["links"] if link["rel"] != "self"]
        path = flight_dir / scene_id / f"{scene_id}.json"
        path.parent.mkdir()
        path.write_text(json.dumps(item))
        collection["links"].append({"rel": "item", "href": f"./{scene_id}/{scene_id}.json"})
    collection_path.write_text(json.dumps(collection))
    return planted


def _files_text(root: Path) -> dict[Path, str]:
    """Every file under ``root`` as text (Parquet tables decoded, so compression hides nothing)."""
    out = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            out[path] = json.dumps(pq.read_table(path).to_pylist(), default=str)
        else:
            out[path] = path.read_bytes().decode("latin-1")
    return out


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def _context(text: str) -> list[str]:
    """Each leaked secret with what surrounds it (where it came from)."""
    out = []
    for name in _leaks(text):
        at = text.index(SECRETS[name])
        out.append(f"{name} in …{text[max(0, at - 150) : at + 60]}…")
    return out


@pytest.fixture
def materialised(tmp_path, monkeypatch, caplog, capfd):
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    archive = write_demo_archive(tmp_path / "demo", flights=1, seed=0, settings=SMALL_DEMO_SETTINGS)
    flight = sorted(archive.flight_ids)[0]
    planted = plant_hrefs(tmp_path / "demo" / flight)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
        instance.add_dynamic_partitions("flight", [flight])
        result = dg.materialize(
            [sar_scenes, sar_tiles, optical_tiles, captions],
            partition_key=flight,
            instance=instance,
            resources={
                "storage": StorageRoot(uri=str(tmp_path / "storage")),
                "archive": SarArchiveResource(uri=str(archive.catalog_path), allowed_href_roots=[LAKE]),
                "optical": OpticalResource(uri=str(tmp_path / "demo" / "optical" / "orthophoto.tif")),
                "captioner": CaptionerResource(),
                "landcover": LandCoverResource(),
            },
            run_config={
                "ops": {"sar_tiles": {"config": {"tile_size": 64, "ground_sample_distance_m": 1.25}}}
            },
        )
        events = instance.all_logs(result.run_id)
    output = capfd.readouterr()
    logged = [f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records]
    return {
        "result": result,
        "events": events,
        "planted": planted,
        "flight": flight,
        "storage": tmp_path / "storage",
        "home": home,
        "output": output.out + output.err,
        "logged": logged,
    }


def _metadata(result, node: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_planted_secrets_reach_no_event_metadata_log_line_or_file(materialised):
    result, events = materialised["result"], materialised["events"]
    assert result.success

    # the planted hrefs went through the stages: recorded with the credential cut out
    scenes = _metadata(result, "sar_scenes")
    tiles = _metadata(result, "sar_tiles")
    assert "outside-roots" in scenes["skip_reasons"], scenes["skip_reasons"]
    assert "evil.example.org/x.tif?" + REDACTED in scenes["skip_reasons"]
    assert "presigned-scene" in scenes["orientation_warnings"]
    assert "presigned-scene" in json.dumps(tiles["skipped_scenes"]) + json.dumps(tiles["read_errors"])
    table = pq.read_table(
        materialised["storage"] / "flights" / materialised["flight"] / "sar_scenes.parquet"
    ).to_pylist()
    thumbnails = [json.loads(row["extra_assets"]).get("thumbnail") for row in table]
    assert f"https://{REDACTED}@127.0.0.1:9/thumbs/quicklook.png?{REDACTED}" in thumbnails
    hrefs = {row["scene_id"]: row["raster_href"] for row in table}
    assert hrefs["presigned-scene"] == f"https://{REDACTED}@127.0.0.1:9/lake/flight/presigned.tif?{REDACTED}"
    assert "local-signed" in hrefs  # pystac drops a local path's query: the raster is read
    assert sum(row["tiles_kept"] for row in tiles["scene_summaries"].values()) > 0

    where: dict[str, str] = {}
    for event in events:  # every event-log entry, whole (messages, metadata, errors, tracebacks)
        where[f"event {event.dagster_event_type or 'log'} {event.step_key}"] = dg.serialize_value(event)
    for node in ("sar_scenes", "sar_tiles", "optical_tiles", "captions"):
        for key, value in _metadata(result, node).items():
            where[f"metadata {node}.{key}"] = json.dumps(value, default=str)
    where["python log records"] = "\n".join(materialised["logged"])
    where["stdout/stderr"] = materialised["output"]
    for root in (materialised["storage"], materialised["home"]):  # outputs; event-log DB, compute logs
        where.update({str(p): text for p, text in _files_text(root).items()})
    # the places were really filled: warnings logged, step output captured to compute-log files
    assert len(where) > 20 and materialised["logged"]
    assert [p for p in materialised["home"].rglob("compute_logs/*") if p.stat().st_size]
    leaked = {place: _context(text) for place, text in where.items() if _leaks(text)}
    assert not leaked, "\n".join(f"{place}: {found}" for place, found in leaked.items())


# -- redaction of any credential an href may carry (RFC 3986 userinfo and query characters) ---------

_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
#: a secret with markers at both ends and inside: any part of it left in a text shows a marker
_MARKERS = ("S3CR", "M1D9", "END7")


def _marked(chars: str):
    part = st.text(alphabet=chars, max_size=12)
    return st.tuples(part, part).map(lambda p: f"{_MARKERS[0]}{p[0]}{_MARKERS[1]}{p[1]}{_MARKERS[2]}")


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["https", "http", "s3", "gs", "az", "ftp"]),
    password=_marked(_UNRESERVED + _SUB_DELIMS + "%:"),
    signature=_marked(_UNRESERVED + _SUB_DELIMS + "%:@/?"),
    query_key=st.sampled_from(["X-Amz-Signature", "X-Amz-Credential", "sig", "token", "GoogleAccessId"]),
    with_user=st.booleans(),
    with_query=st.booleans(),
    before=st.sampled_from(["", "cannot open ", "(", "'", '"', "/vsicurl/", "[", "href="]),
    after=st.sampled_from(["", ")", "'", '"', ": 404 Not Found", ", retrying", "]", "; giving up", "\n"]),
)
def test_no_part_of_a_credential_survives_redaction(
    scheme, password, signature, query_key, with_user, with_query, before, after
):
    userinfo = f"reader:{password}@" if with_user else ""
    query = (
        f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&{query_key}={signature}&X-Amz-Expires=3600" if with_query else ""
    )
    href = f"{scheme}://{userinfo}bucket.example.org/flight/scene.tif{query}"
    for text in (redact(href), redact_text(f"{before}{href}{after}")):
        for marker in _MARKERS if (with_user or with_query) else ():
            assert marker not in text, text
        assert "bucket.example.org/flight/scene.tif" in text  # what is not secret stays readable
