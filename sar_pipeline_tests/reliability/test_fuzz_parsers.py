"""A short fuzz run over the parsers of files users hand the pipeline (issue 13, fuzzing): STAC items,
collections and the root catalogue, and caption files (Karpathy JSON, UCM pairs, precomp text). Random
and mutated content must end in the project's own error, naming the file, with every good input beside
it still read — never another exception, never a hang (each example has a deadline).

Examples are derived from a fixed seed (``derandomize``), so CI runs the same ones every time; raise
``SAR_PIPELINE_FUZZ_EXAMPLES`` for a longer run.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline.archive.stac import StacSarArchive
from sar_pipeline.captioning.datasets import (
    CaptionDataError,
    load_karpathy_json,
    load_precomp,
    load_ucm_pairs,
)
from sar_pipeline.errors import ArchiveError
from sar_pipeline.geo.optical import StacOpticalSource

EXAMPLES = int(os.environ.get("SAR_PIPELINE_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=3000,  # ms per example: a parser that loops or reads a huge file fails here
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FLIGHT = "demo-flight-000"
SCENE = f"{FLIGHT}-scene-00"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every (container path, key) inside a JSON document."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((*path, key))
        out += _places(child, (*path, key))
    return out


@st.composite
def mutated(draw, document: Any) -> str:
    """``document`` (JSON) with a few values deleted, replaced by any JSON value or retyped, or its text
    cut short, a byte flipped, or something else entirely."""
    kind = draw(st.sampled_from(["structure", "structure", "structure", "text", "random"]))
    if kind == "random":
        return json.dumps(draw(json_values)) if draw(st.booleans()) else draw(st.text(max_size=60))
    doc = copy.deepcopy(document)
    if kind == "structure":
        for _ in range(draw(st.integers(1, 4))):
            places = _places(doc)
            if not places:
                break
            *parent_path, key = draw(st.sampled_from(places))
            parent = doc
            for step in parent_path:
                parent = parent[step]
            action = draw(st.sampled_from(["delete", "replace", "wrap"]))
            if action == "delete" and isinstance(parent, dict):
                del parent[key]
            elif action == "wrap":
                parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}, str(parent[key])]))
            else:
                parent[key] = draw(json_values)
        return json.dumps(doc)
    text = json.dumps(doc)
    at = draw(st.integers(0, len(text)))
    return draw(
        st.sampled_from(
            [text[:at], text[:at] + draw(st.text(max_size=3)) + text[at + 1 :], text[:at] + text[at:].upper()]
        )
    )


# -- STAC ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """A demo catalogue with a second flight (``flight-b``) and a second item (``fuzzed``) to mutate."""
    root = tmp_path_factory.mktemp("fuzz") / "archive"
    write_demo_archive(root, flights=1, seed=0, settings=SMALL_DEMO_SETTINGS)
    shutil.copytree(root / FLIGHT, root / "flight-b")
    collection = json.loads((root / "flight-b" / "collection.json").read_text())
    (root / "flight-b" / "collection.json").write_text(json.dumps({**collection, "id": "flight-b"}))
    catalog = json.loads((root / "catalog.json").read_text())
    catalog["links"].append(
        {"rel": "child", "href": "./flight-b/collection.json", "type": "application/json"}
    )
    (root / "catalog.json").write_text(json.dumps(catalog))
    item = json.loads((root / FLIGHT / SCENE / f"{SCENE}.json").read_text())
    (root / FLIGHT / "fuzzed").mkdir()
    item = {**item, "id": "fuzzed", "assets": {k: {**a, "href": f"../{SCENE}/{Path(a['href']).name}"}
                                                for k, a in item["assets"].items()}}  # fmt: skip
    (root / FLIGHT / "fuzzed" / "fuzzed.json").write_text(json.dumps(item))
    collection = json.loads((root / FLIGHT / "collection.json").read_text())
    collection["links"].append(
        {"rel": "item", "href": "./fuzzed/fuzzed.json", "type": "application/geo+json"}
    )
    (root / FLIGHT / "collection.json").write_text(json.dumps(collection))
    assert [s.scene_id for s in StacSarArchive(root / "catalog.json").list_scenes(FLIGHT)] == [
        SCENE,
        "fuzzed",
    ]
    return root


def fuzz_file(path: Path, document: Any, check: Callable[[], None], *examples: str) -> None:
    """Run ``check`` with ``path`` holding each mutated variant of ``document`` (and each of
    ``examples``); the file's original text is put back after each."""
    original = path.read_text() if path.exists() else None

    def run(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            check()
        finally:
            if original is not None:
                path.write_text(original)

    for text in examples:
        run = example(text)(run)
    FUZZ(given(mutated(document))(run))()


def _names_file(error: Exception, path: Path) -> bool:
    """The message names the file (its path, or for an item its folder and id, which the path holds)."""
    return str(path) in str(error) or path.parent.name in str(error)


def test_fuzzed_stac_item(catalogue):
    path = catalogue / FLIGHT / "fuzzed" / "fuzzed.json"

    def check():
        errors: list = []
        scenes = StacSarArchive(catalogue / "catalog.json").list_scenes(FLIGHT, on_error=errors.append)
        assert SCENE in [s.scene_id for s in scenes]  # the good scene beside it is still read
        for error in errors:
            assert isinstance(error, ArchiveError) and _names_file(error, path), repr(error)
        flights = StacSarArchive(catalogue / "catalog.json").list_flights(on_error=errors.append)
        assert [f.flight_id for f in flights] == [FLIGHT, "flight-b"]

    fuzz_file(path, json.loads(path.read_text()), check)


def test_fuzzed_stac_collection(catalogue):
    path = catalogue / "flight-b" / "collection.json"

    def check():
        problems: list = []
        flights = StacSarArchive(catalogue / "catalog.json").list_flights(on_error=problems.append)
        ids = [f.flight_id for f in flights]
        assert FLIGHT in ids  # the other flight is still listed
        for problem in problems:
            assert isinstance(problem, ArchiveError) and _names_file(problem, path), repr(problem)
        for flight_id in ids:
            StacSarArchive(catalogue / "catalog.json").list_scenes(flight_id, on_error=problems.append)
        assert all(isinstance(p, ArchiveError) for p in problems), problems

    fuzz_file(path, json.loads(path.read_text()), check)


def test_fuzzed_stac_catalogue(catalogue):
    path = catalogue / "catalog.json"

    def check():
        problems: list = []
        try:
            StacSarArchive(path).list_flights(on_error=problems.append)
        except ArchiveError as exc:
            assert str(path) in str(exc)
        assert all(isinstance(p, ArchiveError) for p in problems), problems

    fuzz_file(path, json.loads(path.read_text()), check)


def test_fuzzed_optical_stac_item(catalogue):
    """The optical catalogue's reader: a mutated orthophoto item is used or skipped with its reason."""
    path = catalogue / "optical-orthophoto" / "orthophoto" / "orthophoto.json"

    def check():
        source = StacOpticalSource(str(catalogue / "catalog.json"), max_cloud_cover=50)
        assert all(isinstance(reason, str) and reason for reason in source.skipped.values())
        assert len(source.items) + len(source.skipped) <= 1

    fuzz_file(path, json.loads(path.read_text()), check)


# -- caption files ------------------------------------------------------------------------------

KARPATHY = {
    "dataset": "rsicd",
    "images": [
        {"filename": "airport_1.jpg", "split": "train", "sentences": [{"raw": "a runway"}, {"raw": "planes"}]},
        {"filename": "beach_2.jpg", "split": "val", "sentences": [{"raw": "waves on sand", "tokens": ["waves"]}]},
        {"filename": "farm_3.jpg", "split": "test", "sentences": [{"raw": "green fields"}]},
    ],
}  # fmt: skip
UCM = [
    {"ucm_caption_id": "1.tif", "ucmerced_file": "agricultural00.tif", "split": "train", "captions": ["a field"]},
    {"ucm_caption_id": "2.tif", "ucmerced_file": "airplane00.tif", "split": "test", "captions": ["a plane"]},
]  # fmt: skip


def test_fuzzed_karpathy_caption_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("captions") / "dataset_rsicd.json"

    def check():
        try:
            load_karpathy_json(path, path.parent / "images")
        except CaptionDataError as exc:
            assert str(path) in str(exc), exc

    split_list = {"images": [{"filename": "a.jpg", "split": ["test"], "sentences": [{"raw": "a"}]}]}
    fuzz_file(path, KARPATHY, check, json.dumps(split_list))


def test_fuzzed_ucm_pairs_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ucm")
    (folder / "images").mkdir()
    for entry in UCM:
        (folder / "images" / entry["ucmerced_file"]).write_bytes(b"II*\x00")
    path = folder / "ucm_pairs.json"

    def check():
        try:
            load_ucm_pairs(folder)
        except CaptionDataError as exc:  # the pairs file, or the image it names
            assert str(path) in str(exc) or str(folder / "images") in str(exc), exc

    fuzz_file(path, UCM, check, json.dumps([{**UCM[0], "split": {"name": "test"}}, UCM[1]]))


def test_fuzzed_precomp_caption_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ucm_precomp")

    @FUZZ
    @given(st.tuples(st.binary(max_size=80), st.binary(max_size=200)))
    def run(files):
        names, captions = files
        (folder / "test_filename.txt").write_bytes(names)
        (folder / "test_caps.txt").write_bytes(captions)
        try:
            load_precomp(folder, "test")
        except CaptionDataError as exc:
            assert str(folder) in str(exc), exc

    run()
