"""The training dataset: Parquet schema, spatially blocked split, deterministic writer, reader API.

Downstream stages read it with :func:`load_dataset_table` / :func:`current_version`.
"""

from sar_pipeline.dataset.writer import (
    current_version,
    dataset_info,
    dataset_split_paths,
    huggingface_data_files,
    load_dataset_table,
)

__all__ = [
    "current_version",
    "dataset_info",
    "dataset_split_paths",
    "huggingface_data_files",
    "load_dataset_table",
]
