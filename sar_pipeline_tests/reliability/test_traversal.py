"""Paths from ids and hrefs stay where they belong (issue 13, security), beyond what the bad-input corpus
covers (``..``, ``/``, empty and long item and collection ids; asset hrefs to ``/etc/passwd``,
``file://``, ``http://127.0.0.1``, ``../../``): any id the pipeline accepts is one plain path component;
catalogue links (children, items) and the extra rasters a scene opens obey the same reach rule as the
data asset; a symbolic link out of the catalogue is seen through; percent-encoded dot segments do not
climb out of an allowed URL root; a caption file cannot name an image outside its images folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline.archive.stac import StacSarArchive
from sar_pipeline.captioning.datasets import CaptionDataError, load_karpathy_json, load_precomp
from sar_pipeline.errors import ArchiveError, ConfigError
from sar_pipeline.geo.optical import StacOpticalSource
from sar_pipeline.hrefs import ROOTS_SETTING, HrefPolicy
from sar_pipeline.storage import validate_id

FLIGHT = "demo-flight-000"
SCENE = f"{FLIGHT}-scene-00"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/\\-]{0,20}\n?", fullmatch=True))
@example("flight\n")
@example("flight\r")
@example("a\x00b")
@example("a\\..\\b")
@example(".")
@example("..")
@example("a/../b")
def test_an_accepted_id_is_one_plain_path_component(tmp_path_factory, value):
    try:
        accepted = validate_id(value, "flight id")
    except ConfigError as exc:
        assert "not a valid flight id" in exc.reason
        return
    assert accepted == value
    assert value not in (".", "..") and not set(value) & set("/\\\x00\n\r\t")
    root = Path("/srv/storage/flights")
    assert (root / value).resolve().parent == root and len(value) <= 200


@pytest.fixture
def demo(tmp_path) -> Path:
    """A one-flight demo catalogue (its folder), to be edited by the test."""
    root = tmp_path / "archive"
    write_demo_archive(root, flights=1, seed=0, settings=SMALL_DEMO_SETTINGS)
    return root


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _outside_flight(demo: Path, outside: Path, flight_id: str) -> Path:
    """A copy of the demo flight (another id) outside the catalogue's folder; its collection file."""
    shutil.copytree(demo / FLIGHT, outside)
    _edit(outside / "collection.json", lambda c: c.update(id=flight_id))
    return outside / "collection.json"


def test_catalogue_links_out_of_the_archive_are_not_followed(demo, tmp_path):
    by_path = _outside_flight(demo, tmp_path / "elsewhere" / "a", "outside-absolute")
    by_dotdot = _outside_flight(demo, tmp_path / "elsewhere" / "b", "outside-dotdot")
    outside_item = tmp_path / "elsewhere" / "b" / SCENE / f"{SCENE}.json"
    _edit(
        demo / "catalog.json",
        lambda c: c["links"].extend(
            [
                {"rel": "child", "href": str(by_path)},
                {"rel": "child", "href": "../elsewhere/b/collection.json"},
            ]
        ),
    )
    _edit(
        demo / FLIGHT / "collection.json",
        lambda c: c["links"].append({"rel": "item", "href": f"file://{outside_item}"}),
    )
    archive = StacSarArchive(demo / "catalog.json")
    assert [f.flight_id for f in archive.list_flights()] == [FLIGHT]
    problems = [str(p) for p in archive.problems]
    assert len(problems) == 2 and all("child catalogue" in p and ROOTS_SETTING in p for p in problems)
    assert any(str(by_path) in p for p in problems) and any(str(by_dotdot) in p for p in problems)
    errors: list[ArchiveError] = []
    assert [s.scene_id for s in archive.list_scenes(FLIGHT, on_error=errors.append)] == [SCENE]
    (error,) = errors
    assert "item of collection" in str(error) and ROOTS_SETTING in str(error)
    # allowed by naming the root, as the message says
    allowed = StacSarArchive(demo / "catalog.json", allowed_href_roots=[str(tmp_path / "elsewhere")])
    assert [f.flight_id for f in allowed.list_flights()] == [FLIGHT, "outside-absolute", "outside-dotdot"]


def _add_scene(demo: Path, scene_id: str, assets: dict[str, str]) -> None:
    """A copy of the demo scene's item under another id whose assets point at ``assets`` (key → href)."""
    item = json.loads((demo / FLIGHT / SCENE / f"{SCENE}.json").read_text())
    item["id"] = scene_id
    for key, href in assets.items():
        item["assets"][key]["href"] = href
    folder = demo / FLIGHT / scene_id
    folder.mkdir()
    (folder / f"{scene_id}.json").write_text(json.dumps(item))
    _edit(
        demo / FLIGHT / "collection.json",
        lambda c: c["links"].append({"rel": "item", "href": f"./{scene_id}/{scene_id}.json"}),
    )


def test_symbolic_links_and_opened_extra_rasters_out_of_the_archive_skip_the_scene(demo, tmp_path):
    outside = tmp_path / "private"
    outside.mkdir()
    secret = shutil.copy(demo / FLIGHT / SCENE / f"{SCENE}_amplitude.tif", outside / "secret.tif")
    (demo / FLIGHT / "escape.tif").symlink_to(secret)
    (demo / FLIGHT / "escape-dir").symlink_to(outside, target_is_directory=True)
    _add_scene(demo, "file-link", {"amplitude": "../escape.tif"})
    _add_scene(demo, "folder-link", {"amplitude": "../escape-dir/secret.tif"})
    _add_scene(demo, "landcover-out", {"landcover": str(secret)})
    _add_scene(demo, "idealised-out", {"idealised": "../../../private/secret.tif"})
    errors: list[ArchiveError] = []
    scenes = StacSarArchive(demo / "catalog.json").list_scenes(FLIGHT, on_error=errors.append)
    assert [s.scene_id for s in scenes] == [SCENE]
    reasons = {e.source.split("'")[1]: e.reason for e in errors}
    assert set(reasons) == {"file-link", "folder-link", "landcover-out", "idealised-out"}
    assert all(ROOTS_SETTING in r for r in reasons.values())
    assert "asset 'landcover'" in reasons["landcover-out"] and "asset 'idealised'" in reasons["idealised-out"]


def test_an_optical_catalogue_follows_the_same_reach_rule(demo, tmp_path):
    """The optical STAC source (the catalogue the optical tiles come from) follows no link and opens no
    asset out of reach either: those items are skipped naming optical.allowed_href_roots."""
    optical = demo / "optical-orthophoto"
    good = json.loads((optical / "orthophoto" / "orthophoto.json").read_text())
    planted = {
        "etc-passwd": "/etc/passwd",
        "loopback": "http://127.0.0.1:9/x.tif",
        "dotdot": "../../../x.tif",
    }
    for item_id, href in planted.items():
        item = {**good, "id": item_id, "links": [link for link in good["links"] if link["rel"] != "self"]}
        item["assets"] = {key: {**asset, "href": href} for key, asset in good["assets"].items()}
        (optical / item_id).mkdir()
        (optical / item_id / f"{item_id}.json").write_text(json.dumps(item))
        _edit(
            optical / "collection.json",
            lambda c, i=item_id: c["links"].append({"rel": "item", "href": f"./{i}/{i}.json"}),
        )
    outside = _outside_flight(demo, tmp_path / "elsewhere", "outside")
    _edit(demo / "catalog.json", lambda c: c["links"].append({"rel": "child", "href": str(outside)}))
    source = StacOpticalSource(str(demo / "catalog.json"))
    assert [item.id for item, _, _ in source.items] == [good["id"]]
    assert len(source.skipped) == len(planted) + 1
    assert all("optical.allowed_href_roots" in reason for reason in source.skipped.values())
    assert {f"item {i!r}" for i in planted} < set(source.skipped)


@pytest.mark.parametrize(
    "href",
    [
        "https://lake.example.org/sar/%2e%2e/private/x.tif",
        "https://lake.example.org/sar/%2E%2E/private/x.tif",
        "https://lake.example.org/sar/..%2fprivate/x.tif",
        "https://lake.example.org/sar/.%2e/private/x.tif",
        "https://lake.example.org/sar/../private/x.tif",
        "https://lake.example.org/sarcophagus/x.tif",
        "https://lake.example.org.evil.net/sar/x.tif",
        "https://lake.example.org@evil.net/sar/x.tif",
        "s3://lake/sar/../private/x.tif",
        "s3://lake/sar/%2e%2e/private/x.tif",
    ],
)
def test_an_href_cannot_climb_out_of_an_allowed_url_root(href, tmp_path):
    policy = HrefPolicy.for_archive(
        str(tmp_path / "catalog.json"), ["https://lake.example.org/sar/", "s3://lake/sar/"]
    )
    assert policy.problem(href) is not None
    assert policy.problem("https://lake.example.org/sar/flight/a%20b.tif") is None
    assert policy.problem("s3://lake/sar/flight/x.tif?X-Amz-Signature=abc") is None


def test_a_caption_file_cannot_name_an_image_outside_its_images_folder(tmp_path):
    images = tmp_path / "RSICD_images"
    images.mkdir()
    for name in ("../../etc/passwd", "/etc/passwd", "sub/../../x.jpg"):
        captions = {"images": [{"filename": name, "split": "train", "sentences": [{"raw": "a field"}]}]}
        path = tmp_path / "dataset_rsicd.json"
        path.write_text(json.dumps(captions))
        with pytest.raises(CaptionDataError, match="outside the images folder") as raised:
            load_karpathy_json(path, images)
        assert str(path) in str(raised.value) and repr(name) in str(raised.value)
    (tmp_path / "test_filename.txt").write_text("../outside.jpg\n")
    (tmp_path / "test_caps.txt").write_text("a\nb\nc\nd\ne\n")
    with pytest.raises(CaptionDataError, match="outside the images folder"):
        load_precomp(tmp_path, "test", images)
    # a name in a sub-folder of the images folder is fine
    path.write_text(
        json.dumps({"images": [{"filename": "airport/1.jpg", "sentences": [{"raw": "a runway"}]}]})
    )
    (item,) = load_karpathy_json(path, images)
    assert item.image_path == images / "airport" / "1.jpg"
