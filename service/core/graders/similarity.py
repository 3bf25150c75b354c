"""``text_similarity`` metrics, each a score from 0 to 1, for Chinese and English alike.

Token-based metrics (GLEU, ROUGE) compare the evaluation's *units* (``evaluation.metrics.units``:
a CJK character each, an English word each, case and punctuation ignored), so Chinese answers are
not one giant token. BLEU is the evaluation's sacrebleu sentence BLEU (``zh`` tokenizer for CJK)
divided by 100; ``fuzzy_match`` is RapidFuzz's ``WRatio`` with its default preprocessing, the
scorer OpenAI's guide names; ROUGE is Google's ``rouge-score`` (F-measure), GLEU is NLTK's.
``meteor`` needs the WordNet database and ``cosine`` an embedding model, neither of which ships
with a package Tuneline can install offline: both are refused (``UNSUPPORTED``) rather than
approximated.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from nltk.translate.gleu_score import sentence_gleu
from rapidfuzz import fuzz, utils
from rouge_score import rouge_scorer

from service.core.evaluation.metrics import sentence_bleu, units

ROUGE = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}
UNSUPPORTED = {
    "meteor": "METEOR needs the WordNet database, which no package installable offline provides",
    "cosine": "cosine compares embeddings (OpenAI uses text-embedding-3-large), and Tuneline has no "
    "embedding model",
}
METRICS = ("fuzzy_match", "bleu", "gleu", *ROUGE, *UNSUPPORTED)


class _Units:
    """rouge-score's tokenizer interface over the evaluation's units (its default drops CJK)."""

    def tokenize(self, text: str) -> list[str]:
        return units(text)


@lru_cache(maxsize=len(ROUGE))
def _rouge(kind: str) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer([kind], tokenizer=_Units())


def fuzzy_match(text: str, reference: str) -> float:
    return float(fuzz.WRatio(text, reference, processor=utils.default_process)) / 100.0


def bleu(text: str, reference: str) -> float:
    return sentence_bleu(text, reference) / 100.0


def gleu(text: str, reference: str) -> float:
    hypothesis, ref = units(text), units(reference)
    if not hypothesis or not ref:
        return 1.0 if hypothesis == ref else 0.0
    return float(sentence_gleu([ref], hypothesis))


def rouge(metric: str) -> Callable[[str, str], float]:
    kind = ROUGE[metric]

    def score(text: str, reference: str) -> float:
        return float(_rouge(kind).score(reference, text)[kind].fmeasure)

    return score


SCORERS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match,
    "bleu": bleu,
    "gleu": gleu,
    **{metric: rouge(metric) for metric in ROUGE},
}


def similarity(metric: str, text: str, reference: str) -> float:
    """``metric``'s score of ``text`` against ``reference``, 0-1 (metric checked at validation)."""
    return SCORERS[metric](text, reference)
