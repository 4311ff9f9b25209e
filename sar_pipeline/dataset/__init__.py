"""The training dataset: Parquet schema, spatially blocked split, deterministic writer, reader API.

``collect`` gathers every flight's rows from the tile manifests and captions, ``split`` assigns
ground blocks to train/validation/test, ``write`` writes per-flight Parquet shards and a version
manifest naming them, ``read`` is what downstream stages use: :func:`load_dataset_table` / :func:`current_version` /
:func:`version_manifest`.
"""

from sar_pipeline.dataset.read import (
    current_version,
    dataset_info,
    dataset_split_paths,
    huggingface_data_files,
    load_dataset_table,
    version_files,
    version_manifest,
)

__all__ = [
    "current_version",
    "dataset_info",
    "dataset_split_paths",
    "huggingface_data_files",
    "load_dataset_table",
    "version_files",
    "version_manifest",
]
