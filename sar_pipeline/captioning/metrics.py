"""Caption metrics of the paper's Table 1 (BLEU-1..4, METEOR, ROUGE-L, CIDEr) via pycocoevalcap.

pycocoevalcap is the COCO caption evaluation code every captioning paper reports with; METEOR
and the PTB tokenizer run its bundled Java jars (``java`` must be on PATH). SPICE is not used: it
downloads Stanford CoreNLP models at first use.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

from sar_pipeline.errors import ConfigError

#: Column order of the paper's Table 1.
METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr", "METEOR", "ROUGE-L")

#: The paper's row (Table 1, RSICD test set): BLIP fine-tuned on RSICD + UCM.
PAPER_BLIP_RSICD_UCM: dict[str, float] = {
    "BLEU-1": 0.8029,
    "BLEU-2": 0.6941,
    "BLEU-3": 0.6061,
    "BLEU-4": 0.5336,
    "CIDEr": 2.7239,
    "METEOR": 0.4208,
    "ROUGE-L": 0.7178,
}


def compute_caption_metrics(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    tokenize: bool = True,
    meteor: bool = True,
) -> dict[str, float]:
    """Corpus-level BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) of one candidate per image against its references.

    ``candidates``: image id → generated caption; ``references``: image id → reference captions.
    ``tokenize``: run the PTB tokenizer (lower-case, punctuation removed) as the COCO/RSICD
    evaluations do; without it, texts are split on whitespace as given. CIDEr's document
    frequencies come from the references of the evaluated images, so it needs several images.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(candidates) != set(references):
        missing = sorted(set(references) ^ set(candidates))[:5]
        raise ConfigError(
            "caption metrics", f"candidates and references cover different images, e.g. {missing}"
        )
    if not candidates:
        raise ConfigError("caption metrics", "no images to score")
    for key, refs in references.items():
        if not refs:
            raise ConfigError(key, "image has no reference captions")
    res = {k: [candidates[k]] for k in candidates}
    gts = {k: list(references[k]) for k in candidates}
    if tokenize:
        # one tokenizer run (one JVM start) for references and candidates together
        both = _ptb_tokenize(
            {**{("g", k): v for k, v in gts.items()}, **{("r", k): v for k, v in res.items()}}
        )
        gts = {k: both[("g", k)] for k in gts}
        res = {k: both[("r", k)] for k in res}
    else:
        gts = {k: [" ".join(r.split()) for r in v] for k, v in gts.items()}
        res = {k: [" ".join(r.split()) for r in v] for k, v in res.items()}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        scores[f"BLEU-{n}"] = float(value)
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if meteor:
        scores["METEOR"] = float(_meteor(gts, res))
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    return {name: scores[name] for name in METRIC_NAMES if name in scores}


def metrics_markdown_table(
    ours: Mapping[str, float], our_label: str = "Ours (this run)", test_set: str = ""
) -> str:
    """A Markdown table in the layout of the paper's Table 1: the paper's BLIP-RSICD+UCM row, then ours."""
    header = "| Method | " + " | ".join(METRIC_NAMES) + " |"
    rule = "|---|" + "---:|" * len(METRIC_NAMES)

    def row(label: str, values: Mapping[str, float]) -> str:
        return (
            f"| {label} | "
            + " | ".join(f"{values[m]:.4f}" if m in values else "–" for m in METRIC_NAMES)
            + " |"
        )

    lines = [
        header,
        rule,
        row("Paper: BLIP-RSICD+UCM (RSICD test)", PAPER_BLIP_RSICD_UCM),
        row(our_label, ours),
    ]
    if test_set:
        lines.append(f"\nOurs evaluated on: {test_set}")
    return "\n".join(lines)


def _ptb_tokenize(captions: dict[object, list[str]]) -> dict[object, list[str]]:
    """pycocoevalcap's PTB tokenisation (same jar, options and punctuation filter), run from a temp folder.

    pycocoevalcap's own wrapper writes its temporary file inside the installed package, which
    fails where site-packages is read-only (containers running as a non-root user).
    """
    import os
    import subprocess
    import tempfile

    from pycocoevalcap.tokenizer import ptbtokenizer

    _require_java()
    jar = os.path.join(
        os.path.dirname(os.path.abspath(ptbtokenizer.__file__)), ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    )
    keys = [k for k, v in captions.items() for _ in v]
    # one caption per line: any line break inside a caption (\r, U+2028…) would shift every later
    # caption onto another image's line, so all whitespace is folded to single spaces
    sentences = "\n".join(" ".join(c.split()) for v in captions.values() for c in v)
    with tempfile.TemporaryDirectory() as tmp:
        text_file = os.path.join(tmp, "captions.txt")
        with open(text_file, "w", encoding="utf-8") as f:
            f.write(sentences)
        cmd = [
            "java",
            "-cp",
            jar,
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
            text_file,
        ]
        done = subprocess.run(cmd, capture_output=True, check=False)
    if done.returncode != 0:
        raise ConfigError(
            "PTB tokenizer", f"java exited with {done.returncode}: {done.stderr.decode()[-500:]}"
        )
    lines = done.stdout.decode("utf-8").split("\n")
    if len(lines) < len(keys):
        raise ConfigError("PTB tokenizer", f"returned {len(lines)} lines for {len(keys)} captions")
    out: dict[object, list[str]] = {}
    for key, line in zip(keys, lines, strict=False):
        words = [w for w in line.rstrip().split(" ") if w not in ptbtokenizer.PUNCTUATIONS]
        out.setdefault(key, []).append(" ".join(words))
    return out


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    _require_java()
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return score


def _require_java() -> None:
    if shutil.which("java") is None:
        raise ConfigError(
            "java", "not found on PATH: METEOR and the PTB tokenizer of pycocoevalcap need a Java runtime"
        )
