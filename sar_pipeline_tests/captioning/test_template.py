"""Template captions from land cover and labels; the final text with activation token and acquisition words."""

import json

import numpy as np
import pytest

from sar_pipeline.archive.landcover import BUILDING, FIELD, FOREST, NODATA, ROAD, URBAN, WATER
from sar_pipeline.captioning.base import CaptionInput, acquisition_words, compose_text
from sar_pipeline.captioning.template import TemplateCaptioner, caption_from_labels, caption_from_landcover
from sar_pipeline.errors import RasterError


def _fields(shape=(64, 64)):
    return np.full(shape, FIELD, np.uint8)


def test_river_crossing_fields_with_a_forest_and_a_small_village():
    lc = _fields()
    lc[:, 30:33] = WATER  # runs top to bottom: a river
    lc[:, 40:] = FOREST  # 37.5 %
    lc[:12, :30] = URBAN  # 8.8 %
    assert caption_from_landcover(lc) == "a river crossing fields with a forest and a small village"
    lc[:, 40:] = FIELD  # fields now cover most of the tile
    assert caption_from_landcover(lc) == "a river crossing wide farmland with a small village"


def test_the_classes_a_worldcover_product_adds_are_worded():
    from sar_pipeline.archive.landcover import GRASSLAND, SHRUBLAND, WETLAND

    tile = np.full((64, 64), GRASSLAND, np.uint8)
    tile[:, 48:] = SHRUBLAND  # 25 %
    tile[:6, :10] = WETLAND  # 1.5 %: below the mention threshold
    assert caption_from_landcover(tile) == "grassland with scrubland"
    tile[:20, :20] = WETLAND  # ~10 %
    assert caption_from_landcover(tile) == "grassland with scrubland and a marsh"


def test_wording_follows_content_not_chance():
    lake = np.full((64, 64), FOREST, np.uint8)
    lake[20:40, 20:40] = WATER  # enclosed water: a lake, not a river
    assert caption_from_landcover(lake) == "a large forest with a lake"
    town = _fields()
    town[:, :40] = URBAN
    town[:, 40:42] = ROAD
    town[:, 50:] = BUILDING
    text = caption_from_landcover(town)
    assert text.startswith("a road crossing a dense urban area"), text
    # the same raster always gives the same caption; a different raster a different one
    assert caption_from_landcover(town.copy()) == text
    assert caption_from_landcover(lake) != text


def test_nodata_is_ignored_and_all_nodata_is_an_error():
    lc = _fields()
    lc[:, :48] = NODATA
    assert caption_from_landcover(lc) == "wide farmland"
    with pytest.raises(RasterError, match="t7.*no valid pixels"):
        caption_from_landcover(np.zeros((8, 8), np.uint8), "t7")


def test_labels_caption_and_captioner_needs_one_source():
    assert (
        caption_from_labels(["Water courses", "Pastures", "Mixed forest"])
        == "a river with pastures and a mixed forest"
    )
    captioner = TemplateCaptioner()
    assert captioner.caption([CaptionInput("a", labels=("Sea and ocean",))]) == ["the sea"]
    with pytest.raises(RasterError, match="tile-x"):
        captioner.caption([CaptionInput("tile-x")])


def test_bigearthnet_labels_metadata_files(caption_data):
    # BigEarthNet-MM's <patch>/<patch>_labels_metadata.json with real CORINE names (generated)
    files = sorted((caption_data / "bigearthnet").rglob("*labels_metadata.json"))
    captions = {f.parent.name: caption_from_labels(json.loads(f.read_text())["labels"]) for f in files}
    assert captions == {
        "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_41": "scattered houses with fields, a broad-leaved forest "
        "and a coniferous forest",
        "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55": "farmland with patches of natural vegetation with "
        "pastures and a river",
        "S1B_IW_GRDH_1SDV_20171002T170000_32TNR_12_7": "marshes",
    }


def test_bigearthnet_corine_labels(realdata):
    files = sorted((realdata / "bigearthnet_mm").rglob("*labels_metadata.json"))
    assert files
    for f in files:
        labels = json.loads(f.read_text())["labels"]
        text = caption_from_labels(labels)
        assert text and "  " not in text
    first = json.loads(files[0].read_text())["labels"]
    assert caption_from_labels(first) == caption_from_labels(list(first))


def test_final_text_and_acquisition_words():
    words = acquisition_words("X", ["HH"], 45.0, 1.0)
    assert words == "X-band, HH polarisation, incidence 45°, 1.0 m ground resolution"
    assert acquisition_words("C", "VV,VH", float("nan"), None) == "C-band, VV+VH polarisation"
    assert compose_text("a river crossing fields") == "An aerial view, a river crossing fields"
    assert (
        compose_text("Many buildings are near a river .") == "An aerial view, many buildings are near a river"
    )
    assert compose_text("SAR tile", activation_token="A SAR image") == "A SAR image, SAR tile"


def test_prompt_text_is_the_training_texts_form():
    from sar_pipeline.captioning.base import prompt_text

    # a caption or prompt without the token becomes what the dataset's texts look like
    assert prompt_text("a river") == compose_text("a river") == "An aerial view, a river"
    assert prompt_text("  a   river ") == "An aerial view, a river"
    # a text that already carries the token (the dataset's own texts) is kept
    assert prompt_text("An aerial view, a town with fields") == "An aerial view, a town with fields"
    assert prompt_text("a river", activation_token="A SAR image") == "A SAR image, a river"
