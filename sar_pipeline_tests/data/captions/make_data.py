"""Tiny remote-sensing caption datasets in their real formats, written at test time (no data in git).

Each writer mirrors one real layout the captioning loaders read, at a few kilobytes:

* :func:`write_ucm_pairs`: a UC Merced image–caption folder like ``ucm_captions_images``
  (``ucm_pairs.json`` + ``images/<class>NN.tif``): 21 classes × 2 RGB TIFFs, UCM-Captions ids
  ``class_index·100 + k + 1``, 7 of the 42 entries without captions (``split``/``captions``
  null), as in the real sample.
* :func:`write_karpathy`: an RSICD-style Karpathy JSON (``dataset_rsicd.json``: ``images[]`` with
  ``filename``, ``split`` train/val/test, ``sentences[].raw``/``tokens``) and a folder of JPEGs.
* :func:`write_precomp`: an AMFMN/JGDN "precomp" folder (``<split>_filename.txt`` +
  ``<split>_caps.txt``, five captions per image); train lists each name once, test repeats each
  name once per caption, as RSICD's does.
* :func:`write_bigearthnet_labels`: BigEarthNet-MM ``<patch>/<patch>_labels_metadata.json`` files
  with real CORINE level-3 label names.

Images are RGB uint8 with a colour and a stripe pattern per class, so a captioner can tell the
classes apart. Everything is deterministic. To look at the files::

    .venv/bin/python sar_pipeline_tests/data/captions/make_data.py /tmp/caption-fixtures
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: the 21 UC Merced land-use classes, alphabetical (their order sets the UCM-Captions ids)
UCM_CLASSES = (
    "agricultural",
    "airplane",
    "baseballdiamond",
    "beach",
    "buildings",
    "chaparral",
    "denseresidential",
    "forest",
    "freeway",
    "golfcourse",
    "harbor",
    "intersection",
    "mediumresidential",
    "mobilehomepark",
    "overpass",
    "parkinglot",
    "river",
    "runway",
    "sparseresidential",
    "storagetanks",
    "tenniscourt",
)

#: UCM-Captions ids without captions in the real 42-image sample (its JGDN split omits them)
UCM_UNCAPTIONED = frozenset(
    {"1002.tif", "1102.tif", "1302.tif", "1401.tif", "1501.tif", "1601.tif", "2002.tif"}
)

# Five reference captions per class in the UCM-Captions style (sentence case, " ." at the end).
_CAPTION_PATTERNS = (
    "There is a {} area .",
    "It is a {} area .",
    "Here is a {} scene .",
    "This is a {} scene seen from above .",
    "An aerial image of a {} area .",
)

#: real CORINE level-3 names as BigEarthNet writes them, per fixture patch
BIGEARTHNET_PATCHES: dict[str, list[str]] = {
    "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_41": [
        "Discontinuous urban fabric",
        "Non-irrigated arable land",
        "Broad-leaved forest",
        "Coniferous forest",
    ],
    "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55": [
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
        "Pastures",
        "Water courses",
    ],
    "S1B_IW_GRDH_1SDV_20171002T170000_32TNR_12_7": ["Inland marshes"],
}


def class_captions(name: str) -> list[str]:
    """The five reference captions of a UC Merced class in the fixtures."""
    return [pattern.format(name) for pattern in _CAPTION_PATTERNS]


def class_image(class_index: int, k: int, size: int = 64) -> np.ndarray:
    """A (size, size, 3) uint8 RGB picture: a colour and a stripe period that depend on the class."""
    rng = np.random.default_rng(1000 * class_index + k)
    hue = np.array([(97 * class_index) % 256, (53 * class_index + 80) % 256, (29 * class_index + 160) % 256])
    period = 4 + class_index % 7
    stripes = ((np.arange(size)[:, None] + (1 + class_index % 3) * np.arange(size)[None, :]) // period) % 2
    image = hue[None, None, :] * (0.55 + 0.45 * stripes[:, :, None]) + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_ucm_pairs(folder: str | Path, size: int = 64) -> Path:
    """Write a UCM image–caption folder (``ucm_pairs.json`` + ``images/``); returns the folder."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for class_index, name in enumerate(UCM_CLASSES):
        for k in range(2):
            file_name = f"{name}{k:02d}.tif"
            Image.fromarray(class_image(class_index, k, size)).save(folder / "images" / file_name)
            caption_id = f"{class_index * 100 + k + 1}.tif"
            captioned = caption_id not in UCM_UNCAPTIONED
            entries.append(
                {
                    "ucm_caption_id": caption_id,
                    "ucmerced_file": f"{name}/{file_name}",
                    "class": name,
                    "split": "train" if captioned else None,
                    "captions": class_captions(name) if captioned else None,
                }
            )
    (folder / "ucm_pairs.json").write_text(json.dumps(entries, indent=1))
    return folder


def write_karpathy(folder: str | Path, size: int = 64) -> Path:
    """Write ``dataset_rsicd.json`` (Karpathy format) and ``images/*.jpg`` into ``folder``; returns the JSON.

    Eight classes × three images: the first two of each class ``train``, the third ``val`` for
    even classes and ``test`` for odd ones.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, sent_id = [], 0
    for class_index, name in enumerate(UCM_CLASSES[:8]):
        for k in range(3):
            file_name = f"{name}_{k + 1}.jpg"
            Image.fromarray(class_image(class_index, k, size)).save(folder / "images" / file_name, quality=90)
            split = "train" if k < 2 else ("val" if class_index % 2 == 0 else "test")
            sentences = []
            for raw in class_captions(name):
                sentences.append(
                    {
                        "tokens": raw.lower().rstrip(" .").split(),
                        "raw": raw,
                        "imgid": len(images),
                        "sentid": sent_id,
                    }
                )
                sent_id += 1
            images.append(
                {
                    "filename": file_name,
                    "imgid": len(images),
                    "split": split,
                    "sentences": sentences,
                    "sentids": [s["sentid"] for s in sentences],
                }
            )
    path = folder / "dataset_rsicd.json"
    path.write_text(json.dumps({"images": images, "dataset": "rsicd"}))
    return path


def write_precomp(folder: str | Path) -> Path:
    """Write a precomp folder: ``train`` (names once, 6 images) and ``test`` (names 5× each, 3 images)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = {"train": (UCM_CLASSES[:6], False), "test": (UCM_CLASSES[6:9], True)}
    for split, (names, repeated) in layout.items():
        file_names, captions = [], []
        for name in names:
            file_names += [f"{name}_1.jpg"] * (5 if repeated else 1)
            captions += class_captions(name)
        (folder / f"{split}_filename.txt").write_text("\n".join(file_names) + "\n")
        (folder / f"{split}_caps.txt").write_text("\n".join(captions) + "\n")
    return folder


def write_bigearthnet_labels(folder: str | Path) -> list[Path]:
    """Write one ``<patch>/<patch>_labels_metadata.json`` per :data:`BIGEARTHNET_PATCHES` entry."""
    folder = Path(folder)
    paths = []
    for patch, labels in BIGEARTHNET_PATCHES.items():
        path = folder / patch / f"{patch}_labels_metadata.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "labels": labels,
            "coordinates": {"ulx": 373200, "uly": 5350800, "lrx": 374400, "lly": 5349600},
            "projection": "EPSG:32633",
            "scene_source": patch,
            "acquisition_time": "2017-06-13T16:50:43",
        }
        path.write_text(json.dumps(metadata))
        paths.append(path)
    return paths


def write_all(root: str | Path) -> Path:
    """Every fixture under ``root``: ``ucm_captions_images/``, ``rsicd/``, ``ucm_precomp/``, ``bigearthnet/``."""
    root = Path(root)
    write_ucm_pairs(root / "ucm_captions_images")
    write_karpathy(root / "rsicd")
    write_precomp(root / "ucm_precomp")
    write_bigearthnet_labels(root / "bigearthnet")
    return root


if __name__ == "__main__":
    print(write_all(sys.argv[1] if len(sys.argv) > 1 else "caption-fixtures"))
