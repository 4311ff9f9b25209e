"""docs/reliability.md cannot drift: its bad-input table is the corpus's declarations, and every test it
cites exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sar_pipeline_tests.reliability.corpus import DOC, KINDS, TABLE_END, TABLE_START, doc_with_table

REPO = DOC.parents[1]


def test_the_bad_input_table_lists_every_corpus_kind_as_declared():
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index(TABLE_START) : text.index(TABLE_END)]
    for kind in KINDS:
        assert f"| `{kind.kind}` | {kind.stage} | {kind.outcome} |" in table, kind.kind
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(KINDS)
    assert text == doc_with_table(text), (
        "docs/reliability.md is stale: run python sar_pipeline_tests/reliability/corpus.py --doc"
    )


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_document_cites_exists():
    cited = set(re.findall(r"(sar_pipeline_tests/[\w/]+\.py)::(\w+)", DOC.read_text(encoding="utf-8")))
    assert len(cited) >= 5
    missing = [
        f"{path}::{name}"
        for path, name in sorted(cited)
        if not (REPO / path).is_file() or name not in _functions(REPO / path)
    ]
    assert not missing, missing
