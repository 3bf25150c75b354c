"""Answer-vs-reference metrics that work for Chinese and English alike.

Text is compared in *units*: every CJK character (Han, kana, Hangul) is a unit of its own, and
a run of other letters or digits (an English word, a number) is one unit; case, width
(NFKC), whitespace and punctuation are ignored. This is the mixed segmentation of the CMRC 2018
reading-comprehension evaluation: character-level for Chinese, word-level for English, where a
character-level F1 would reward "the" for matching "then". BLEU is sacrebleu's, with its ``zh``
tokenizer whenever a reference holds CJK text and ``13a`` otherwise.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU

MAX_UNITS = 4000  # longer texts are cut before the quadratic LCS

_CJK_RANGES = (
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x2FA1F),  # CJK extensions B-F, compatibility supplement
)


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def has_cjk(text: str) -> bool:
    return any(is_cjk(ch) for ch in text)


def units(text: str) -> list[str]:
    """The comparison units of ``text`` (see the module docstring)."""
    out: list[str] = []
    word: list[str] = []
    for ch in unicodedata.normalize("NFKC", text).lower():
        if is_cjk(ch):
            if word:
                out.append("".join(word))
                word = []
            out.append(ch)
        elif ch.isalnum():
            word.append(ch)
        elif word:  # whitespace, punctuation, symbols: separators, never units
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return out[:MAX_UNITS]


def exact_match(answer: str, reference: str) -> float:
    return 1.0 if units(answer) == units(reference) else 0.0


def _f1(overlap: int, n_answer: int, n_reference: int) -> float:
    if n_answer == 0 or n_reference == 0:
        return 1.0 if n_answer == n_reference else 0.0
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_answer, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def char_f1(answer: str, reference: str) -> float:
    """F1 of the unit multisets (SQuAD-style bag overlap, characters for CJK)."""
    a, r = units(answer), units(reference)
    overlap = sum((Counter(a) & Counter(r)).values())
    return _f1(overlap, len(a), len(r))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 (β = 1) over units: the longest common subsequence, in order."""
    a, r = units(answer), units(reference)
    return _f1(_lcs(a, r) if a and r else 0, len(a), len(r))


def bleu_tokenizer(references: Sequence[str]) -> str:
    return "zh" if any(has_cjk(r) for r in references) else "13a"


def sentence_bleu(answer: str, reference: str) -> float:
    """Sentence BLEU, 0-100 (effective order, sacrebleu's default exponential smoothing)."""
    metric = BLEU(tokenize=bleu_tokenizer([reference]), effective_order=True)
    return float(metric.sentence_score(answer, [reference]).score)


def corpus_bleu(answers: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU, 0-100, the number to compare models by (sentence BLEU averages poorly)."""
    if not answers:
        return 0.0
    metric = BLEU(tokenize=bleu_tokenizer(references))
    return float(metric.corpus_score(list(answers), [list(references)]).score)


@dataclass(frozen=True)
class Scores:
    exact_match: float
    char_f1: float
    rouge_l: float
    bleu: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


def score(answer: str, reference: str) -> Scores:
    return Scores(
        exact_match=exact_match(answer, reference),
        char_f1=char_f1(answer, reference),
        rouge_l=rouge_l(answer, reference),
        bleu=sentence_bleu(answer, reference),
    )


METRIC_NAMES = ("exact_match", "char_f1", "rouge_l", "bleu")


def summarize(pairs: Sequence[tuple[str, str]], per_example: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means of the per-example scores (0-1) and corpus BLEU (0-100) over (answer, reference)."""
    n = len(per_example)
    out: dict[str, float] = {}
    for name in ("exact_match", "char_f1", "rouge_l"):
        out[name] = round(sum(row[name] for row in per_example) / n, 4) if n else 0.0
    out["bleu"] = round(corpus_bleu([a for a, _ in pairs], [r for _, r in pairs]), 4)
    return out


def preference_accuracy(margins: Sequence[float]) -> float | None:
    """Share (0-1) of preference pairs whose margin log p(preferred) - log p(non-preferred) is
    strictly positive: a tie is not a preference (a model that cannot tell the outputs apart, or
    is shown the same text twice, scores 0 on that pair, not 0.5). None when no pair was scored."""
    if not margins:
        return None
    return sum(1 for margin in margins if margin > 0) / len(margins)
