"""Caption dataset loaders on generated files in the real layouts (precomp, Karpathy JSON, UCM pairs),
the real sample files as an extra; bad counts."""

import json

import pydantic
import pytest

from sar_pipeline.captioning.datasets import (
    CaptionDataError,
    CaptionDatasetSettings,
    combine,
    holdout_split,
    load_caption_dataset,
    load_caption_datasets,
    load_karpathy_json,
    load_precomp,
    load_ucm_pairs,
)
from sar_pipeline.errors import ConfigError
from sar_pipeline_tests.data.captions.make_data import UCM_CLASSES, class_captions


def test_precomp_layouts(caption_data):
    folder = caption_data / "ucm_precomp"
    train = load_precomp(folder, "train")  # each name listed once, five captions per name
    assert [i.image_name for i in train] == [f"{name}_1.jpg" for name in UCM_CLASSES[:6]]
    assert all(i.split == "train" and i.source == "ucm" and i.image_path is None for i in train)
    assert train[1].captions == tuple(class_captions("airplane"))
    test = load_precomp(folder, "test", images_dir=caption_data / "images")  # each name repeated 5×
    assert [i.image_name for i in test] == [f"{name}_1.jpg" for name in UCM_CLASSES[6:9]]
    assert sum(len(i.captions) for i in test) == 15 and test[0].split == "test"
    assert test[0].image_path == caption_data / "images" / "denseresidential_1.jpg"


def test_ucm_pairs_karpathy_and_combined(caption_data):
    ucm = load_ucm_pairs(caption_data / "ucm_captions_images")
    assert len(ucm) == 35  # 42 images, 7 without captions left out
    airplane = next(i for i in ucm if i.image_name == "101.tif")
    assert airplane.image_path.name == "airplane00.tif" and airplane.image_path.is_file()
    assert airplane.captions[0] == "There is a airplane area ." and airplane.key == "ucm/101.tif"
    rsicd = load_karpathy_json(
        caption_data / "rsicd" / "dataset_rsicd.json", caption_data / "rsicd" / "images"
    )
    assert len(rsicd) == 24 and {i.split for i in rsicd} == {"train", "validation", "test"}
    assert all(i.image_path.is_file() for i in rsicd)
    both = load_caption_datasets(
        [
            CaptionDatasetSettings(kind="ucm_pairs", path=str(caption_data / "ucm_captions_images")),
            CaptionDatasetSettings(
                kind="karpathy",
                path=str(caption_data / "rsicd" / "dataset_rsicd.json"),
                images_dir=str(caption_data / "rsicd" / "images"),
            ),
        ]
    )
    assert len(both) == 35 + 24 and both[35].key == "rsicd/agricultural_1.jpg"
    with pytest.raises(CaptionDataError, match=f"{ucm[0].key}: appears in two"):
        combine(ucm, ucm[:1])
    held = holdout_split(ucm, 0.2)
    assert held == holdout_split(ucm, 0.2)  # deterministic
    assert 0 < sum(i.split == "test" for i in held) < 35
    assert holdout_split(ucm, 0.2, salt="other") != held
    spec = CaptionDatasetSettings(
        kind="ucm_pairs", path=str(caption_data / "ucm_captions_images"), holdout_fraction=0.2
    )
    assert load_caption_dataset(spec) == held
    with pytest.raises(ConfigError, match="caption_metrics.datasets: no caption dataset configured"):
        load_caption_datasets([], "caption_metrics.datasets")


# counts from rs_captions_jgdn/SOURCES.md
PRECOMP_COUNTS = {
    ("ucm", "train"): (1480, 7400),
    ("ucm", "val"): (210, 1050),
    ("ucm", "test"): (110, 550),
    ("rsicd", "train"): (9828, 49140),
    ("rsicd", "test"): (1093, 5465),
    ("rsitmd", "test"): (452, 2260),
    ("sydney", "train"): (497, 2485),
}


@pytest.mark.parametrize(("dataset", "split"), sorted(PRECOMP_COUNTS))
def test_real_precomp_counts(realdata, dataset, split):
    items = load_precomp(realdata / "rs_captions_jgdn" / "data" / f"{dataset}_precomp", split)
    images, captions = PRECOMP_COUNTS[(dataset, split)]
    assert len(items) == images
    assert sum(len(i.captions) for i in items) == captions
    assert all(len(i.captions) == 5 for i in items)
    assert len({i.image_name for i in items}) == images
    assert items[0].source == dataset


def test_real_precomp_content(realdata):
    ucm_test = load_precomp(realdata / "rs_captions_jgdn" / "data" / "ucm_precomp", "test")
    assert ucm_test[0].image_name == "81.tif" and ucm_test[0].captions[0] == "There is a piece of farmland ."
    # RSICD test lists each name five times in a row: grouped back to one image
    rsicd_test = load_precomp(realdata / "rs_captions_jgdn" / "data" / "rsicd_precomp", "test")
    assert rsicd_test[0].image_name == "airport_348.jpg" and rsicd_test[0].split == "test"


def test_ucm_pairs_and_combined_rsicd_ucm(realdata):
    ucm = load_ucm_pairs(realdata / "ucm_captions_images")
    assert len(ucm) == 35  # 42 images, 35 with captions (SOURCES.md)
    airplane = next(i for i in ucm if i.image_name == "101.tif")
    assert airplane.image_path.name == "airplane00.tif" and airplane.image_path.is_file()
    rsicd = load_precomp(realdata / "rs_captions_jgdn" / "data" / "rsicd_precomp", "test")
    both = combine(rsicd, ucm)
    assert len(both) == 1093 + 35
    with pytest.raises(CaptionDataError, match=f"{ucm[0].key}: appears in two"):
        combine(ucm, ucm[:1])
    held = holdout_split(ucm, 0.2)
    assert held == holdout_split(ucm, 0.2)  # deterministic
    assert 0 < sum(i.split == "test" for i in held) < 35


def _write_precomp(folder, names, caps, split="train"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_filename.txt").write_text("\n".join(names) + "\n")
    (folder / f"{split}_caps.txt").write_text("\n".join(caps) + "\n")
    return folder


def test_mismatched_caption_counts_name_the_file_and_counts(tmp_path):
    folder = _write_precomp(tmp_path / "x_precomp", ["1.tif", "2.tif"], [f"caption {i}" for i in range(9)])
    with pytest.raises(
        CaptionDataError, match=r"train_caps.txt.*9 captions for 2 names.*expected 5× the names \(10\)"
    ):
        load_precomp(folder, "train")
    repeated = _write_precomp(
        tmp_path / "y_precomp", ["a.jpg"] * 4 + ["b.jpg"], [f"c{i}" for i in range(5)], "test"
    )
    with pytest.raises(CaptionDataError, match="test_filename.txt.*lines 1-5"):
        load_precomp(repeated, "test")
    with pytest.raises(CaptionDataError, match="val_filename.txt.*missing"):
        load_precomp(folder, "val")


def test_karpathy_json(tmp_path):
    data = {
        "dataset": "rsicd",
        "images": [
            {
                "filename": "airport_1.jpg",
                "split": "train",
                "sentences": [{"raw": "many planes . ", "tokens": []}] * 5,
            },
            {"filename": "beach_2.jpg", "split": "val", "sentences": [{"raw": "a  beach", "tokens": []}]},
        ],
    }
    path = tmp_path / "dataset_rsicd.json"
    path.write_text(json.dumps(data))
    items = load_karpathy_json(path, images_dir=tmp_path / "images")
    assert [i.key for i in items] == ["rsicd/airport_1.jpg", "rsicd/beach_2.jpg"]
    assert items[1].split == "validation" and items[1].captions == ("a beach",)
    assert items[0].image_path == tmp_path / "images" / "airport_1.jpg"
    assert load_caption_dataset(CaptionDatasetSettings(kind="karpathy", path=str(path)))[0].image_path is None
    path.write_text(json.dumps({"images": [{"filename": "x.jpg"}]}))
    with pytest.raises(CaptionDataError, match="dataset_rsicd.json.*entry 0 lacks 'sentences'"):
        load_karpathy_json(path)
    with pytest.raises(pydantic.ValidationError, match="kind"):
        CaptionDatasetSettings(kind="coco", path=str(path))
