"""Remote-sensing caption datasets: Karpathy JSON (RSICD), the "precomp" text layout, UCM image pairs.

Every loader returns ``CaptionedImage`` records (one per image, all its reference captions), so
datasets combine by concatenation (the paper fine-tunes BLIP on RSICD + UCM).

Sources: RSICD, Lu et al. 2017 ("Exploring models and data for remote sensing image caption
generation"), ``dataset_rsicd.json`` in the Karpathy split format; UCM-Captions and
Sydney-Captions, Qu et al. 2016; the "precomp" layout of the AMFMN/GaLR/JGDN retrieval code
(``<split>_filename.txt`` one image name per line, ``<split>_caps.txt`` one caption per line,
five per image in order; train files list each image once, some test/val files repeat each
name once per caption).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field

from sar_pipeline.errors import ConfigError, SarPipelineError
from sar_pipeline.settings import Settings

CAPTIONS_PER_IMAGE = 5


class CaptionDatasetSettings(Settings):
    """One remote-sensing caption dataset: its layout, where it lies, and how to split it."""

    kind: Literal["karpathy", "precomp", "ucm_pairs"] = Field(
        description="Layout: 'karpathy' (a Karpathy-split JSON such as RSICD's dataset_rsicd.json), "
        "'precomp' (a folder of <split>_filename.txt + <split>_caps.txt) or 'ucm_pairs' (a folder of "
        "ucm_pairs.json + images/)."
    )
    path: str = Field(description="The JSON file (karpathy) or the folder (precomp, ucm_pairs), local.")
    images_dir: str | None = Field(
        default=None,
        description="Folder of the images the file names (karpathy, precomp); none = captions only "
        "(enough for text statistics, not for training or evaluation).",
    )
    splits: list[str] = Field(
        default=["train", "test"], description="precomp only: which <split>_ file pairs to read."
    )
    source: str | None = Field(
        default=None,
        description="Name of the dataset in image keys (<source>/<image>); none = the JSON's 'dataset' "
        "field or the file / folder name.",
    )
    holdout_fraction: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="If > 0, re-split: this share of the images (by a hash of their key) becomes 'test', "
        "the rest 'train' — for sets that ship without a test split, like the 35 captioned UCM images.",
    )
    holdout_salt: str = Field(
        default="", description="Salt of the hold-out hash; change it for another hold-out draw."
    )


class CaptionDataError(SarPipelineError):
    """A caption dataset file that cannot be read as captions for images (wrong counts, missing fields)."""


@dataclass(frozen=True)
class CaptionedImage:
    """One image and its reference captions. ``image_path`` is None when only the text is available."""

    source: str
    image_name: str
    split: str
    captions: tuple[str, ...]
    image_path: Path | None = None

    @property
    def key(self) -> str:
        """Unique id across combined datasets: ``<source>/<image_name>``."""
        return f"{self.source}/{self.image_name}"


def _read_utf8(path: Path) -> str:
    """The text of a caption file, decoded as UTF-8; a byte that is not is an error naming where."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CaptionDataError(path, f"unreadable: {e}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CaptionDataError(
            path,
            f"not UTF-8 text: byte {data[e.start]:#04x} at offset {e.start} (line {line}); re-save it as UTF-8",
        ) from e


def _caption_texts(captions: object, where: str, source: Path) -> tuple[str, ...]:
    """Reference captions as whitespace-normalised strings; anything but a list of strings is an
    error naming the entry (a bare string would otherwise be read letter by letter)."""
    if isinstance(captions, str) or not isinstance(captions, list | tuple):
        raise CaptionDataError(
            source,
            f"{where}: captions must be a list of strings, got {type(captions).__name__} {captions!r:.60}",
        )
    out = []
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise CaptionDataError(
                source, f"{where}: caption {i} is {type(caption).__name__} {caption!r:.60}, not a string"
            )
        out.append(" ".join(caption.split()))
    return tuple(out)


def _split_name(split: object, where: str, source: Path) -> str:
    """A split name as written; anything but text is an error naming the entry."""
    if not isinstance(split, str):
        raise CaptionDataError(source, f"{where}: split {split!r:.40} is {type(split).__name__}, not a name")
    return split


def _one_split_per_image(items: list[CaptionedImage], source: Path) -> list[CaptionedImage]:
    """Refuse a file that lists an image in two splits (its captions would be trained on and then
    scored as unseen) or twice in one, naming the image and the splits."""
    splits: dict[str, list[str]] = {}
    for item in items:
        splits.setdefault(item.image_name, []).append(item.split)
    for name, found in splits.items():
        if len(found) > 1:
            raise CaptionDataError(
                source,
                f"image {name!r} is listed {len(found)}× (splits {sorted(found)}): each image must be in "
                "exactly one split, or held-out scores are measured on training images",
            )
    return items


def load_karpathy_json(
    path: str | Path, images_dir: str | Path | None = None, source: str | None = None
) -> list[CaptionedImage]:
    """Read a Karpathy-style caption file (``{"images": [{"filename", "split", "sentences": [{"raw"}]}]}``)."""
    path = Path(path)
    try:
        data = json.loads(_read_utf8(path))
    except json.JSONDecodeError as e:
        raise CaptionDataError(path, f"unreadable JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionDataError(path, "no 'images' list: not a Karpathy-style caption file")
    source = source or str(data.get("dataset") or path.stem)
    out = []
    for i, entry in enumerate(data["images"]):
        try:
            name = entry["filename"]
            sentences = entry["sentences"]
            raws = (
                [s["raw"] if isinstance(s, dict) else s for s in sentences]
                if isinstance(sentences, list)
                else sentences
            )
        except (KeyError, TypeError) as e:
            raise CaptionDataError(
                path, f"image entry {i} lacks {e}: need 'filename' and 'sentences[].raw'"
            ) from e
        if not isinstance(name, str):
            raise CaptionDataError(path, f"image entry {i}: filename {name!r} is not a string")
        captions = _caption_texts(raws, f"image {name!r} sentences[].raw", path)
        if not captions:
            raise CaptionDataError(path, f"image {name!r} has no captions")
        split = _split_name(entry.get("split", "train"), f"image {name!r}", path)
        split = {"val": "validation", "restval": "train"}.get(split, split)
        out.append(CaptionedImage(source, name, split, captions, _image_path(images_dir, name, path)))
    return _one_split_per_image(out, path)


def load_precomp(
    folder: str | Path,
    split: str,
    images_dir: str | Path | None = None,
    source: str | None = None,
    captions_per_image: int = CAPTIONS_PER_IMAGE,
) -> list[CaptionedImage]:
    """Read ``<split>_filename.txt`` + ``<split>_caps.txt`` of a precomp folder (e.g. ``ucm_precomp``).

    Accepts both layouts: names listed once (captions = ``captions_per_image`` × names) or each name
    repeated once per caption (captions = names, in runs of ``captions_per_image``). Any other count
    is an error naming the files and the counts.
    """
    folder = Path(folder)
    names_file, caps_file = folder / f"{split}_filename.txt", folder / f"{split}_caps.txt"
    for f in (names_file, caps_file):
        if not f.is_file():
            raise CaptionDataError(
                f, f"missing: a precomp folder needs {split}_filename.txt and {split}_caps.txt"
            )
    names = _lines(names_file)
    caps = [" ".join(c.split()) for c in _lines(caps_file)]
    source = source or folder.name.removesuffix("_precomp")
    k = captions_per_image
    if len(caps) == k * len(names):
        groups = [(name, caps[k * i : k * (i + 1)]) for i, name in enumerate(names)]
    elif len(caps) == len(names) and len(names) % k == 0:
        groups = []
        for i in range(0, len(names), k):
            run = set(names[i : i + k])
            if len(run) != 1:
                raise CaptionDataError(
                    names_file,
                    f"lines {i + 1}-{i + k} name different images {sorted(run)}; expected each name {k}× in a row",
                )
            groups.append((names[i], caps[i : i + k]))
    else:
        raise CaptionDataError(
            caps_file,
            f"{len(caps)} captions for {len(names)} names in {names_file.name}: expected {k}× the names "
            f"({k * len(names)}) or one per name line with each name repeated {k}×",
        )
    split_name = {"val": "validation"}.get(split.split("_")[0], split.split("_")[0])
    return [
        CaptionedImage(source, name, split_name, tuple(c), _image_path(images_dir, name, names_file))
        for name, c in groups
    ]


def load_ucm_pairs(folder: str | Path) -> list[CaptionedImage]:
    """Read a UCM image-caption folder: ``ucm_pairs.json`` (id, UC Merced file, split, captions) + ``images/``.

    Entries without captions are left out. ``image_name`` is the UCM-Captions id (``"101.tif"``).
    """
    folder = Path(folder)
    pairs_file = folder / "ucm_pairs.json"
    try:
        entries = json.loads(_read_utf8(pairs_file))
    except json.JSONDecodeError as e:
        raise CaptionDataError(pairs_file, f"unreadable: {e}") from e
    if not isinstance(entries, list):
        raise CaptionDataError(pairs_file, f"expected a list of entries, got {type(entries).__name__}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CaptionDataError(pairs_file, f"entry {i} is {type(entry).__name__}, not an object")
        captions = entry.get("captions")
        if not captions:
            continue
        try:
            image_path = folder / "images" / Path(entry["ucmerced_file"]).name
            name = entry["ucm_caption_id"]
        except (KeyError, TypeError) as e:
            raise CaptionDataError(pairs_file, f"entry {i} lacks {e}") from e
        if not image_path.is_file():
            raise CaptionDataError(image_path, f"image of {name} missing")
        captions = _caption_texts(captions, f"entry {i} ({name})", pairs_file)
        split = _split_name(entry.get("split") or "train", f"entry {i} ({name})", pairs_file)
        out.append(CaptionedImage("ucm", str(name), split, captions, image_path))
    return _one_split_per_image(out, pairs_file)


def combine(*datasets: Iterable[CaptionedImage]) -> list[CaptionedImage]:
    """Concatenate datasets; an image key appearing twice is an error (it would leak across splits)."""
    out: list[CaptionedImage] = []
    seen: set[str] = set()
    for ds in datasets:
        for item in ds:
            if item.key in seen:
                raise CaptionDataError(item.key, "appears in two of the combined datasets")
            seen.add(item.key)
            out.append(item)
    return out


def holdout_split(items: Sequence[CaptionedImage], fraction: float, salt: str = "") -> list[CaptionedImage]:
    """Re-split deterministically: about ``fraction`` of images (by hash of key) become ``"test"``.

    For sets that ship without a test split (e.g. the 35 captioned UCM images of the sample).
    """
    out = []
    for item in items:
        h = int(hashlib.sha256(f"{salt}{item.key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        split = "test" if h < fraction else "train"
        out.append(CaptionedImage(item.source, item.image_name, split, item.captions, item.image_path))
    return out


def load_caption_dataset(settings: CaptionDatasetSettings) -> list[CaptionedImage]:
    """Load the caption dataset ``settings`` describes (re-split with :func:`holdout_split` if
    ``holdout_fraction`` > 0)."""
    if settings.kind == "karpathy":
        items = load_karpathy_json(settings.path, settings.images_dir, settings.source)
    elif settings.kind == "precomp":
        items = combine(
            *(load_precomp(settings.path, s, settings.images_dir, settings.source) for s in settings.splits)
        )
    else:
        items = load_ucm_pairs(settings.path)
    if settings.holdout_fraction:
        items = holdout_split(items, settings.holdout_fraction, settings.holdout_salt)
    return items


def load_caption_datasets(
    datasets: Sequence[CaptionDatasetSettings], setting: str = "datasets"
) -> list[CaptionedImage]:
    """Load and :func:`combine` several caption datasets (e.g. RSICD + UCM, as the paper trains BLIP).

    No dataset at all is a ConfigError naming ``setting`` (where the user lists them)."""
    require_datasets(datasets, setting)
    return combine(*(load_caption_dataset(d) for d in datasets))


def require_datasets(datasets: Sequence[CaptionDatasetSettings], setting: str = "datasets") -> None:
    """Raise ConfigError naming ``setting`` when no caption dataset is configured."""
    if not datasets:
        raise ConfigError(
            setting,
            "no caption dataset configured: give at least one, e.g. {kind: karpathy, path: "
            "/data/RSICD/dataset_rsicd.json, images_dir: /data/RSICD/RSICD_images} or {kind: ucm_pairs, "
            "path: /data/ucm_captions_images, holdout_fraction: 0.2}",
        )


def _image_path(images_dir: str | Path | None, name: str, source: Path) -> Path | None:
    """``images_dir/name`` (None without an images folder); a name that would lead out of the images
    folder (absolute, or with a ``..`` part) is an error naming the caption file ``source``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or parts[0] == "/" or ".." in parts:
        raise CaptionDataError(
            source,
            f"image {name!r} lies outside the images folder: image names are relative to it "
            "(no leading '/', no '..')",
        )
    return None if images_dir is None else Path(images_dir) / name


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in _read_utf8(path).splitlines() if line.strip()]
