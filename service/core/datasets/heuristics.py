"""Whole-file text statistics behind the classic `prepare_data` heuristics, kept while streaming."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

# Separator and stop candidates, in the classic tool's order (openai 0.28.1 validators.py), so
# English completion-model data comes out exactly as that tool writes it.
SEPARATOR_DEFAULT = "\n\n### =>\n\n"
SEPARATOR_OPTIONS = (" ->", "\n\n###\n\n", "\n\n===\n\n", "\n\n---\n\n", "\n\n===>\n\n", "\n\n--->\n\n")
STOP_DEFAULT = " [END]"
STOP_OPTIONS = ("\n", ".", " END", "***", "+++", "&&&", "$$$", "@@@", "%%%")
SENTENCE_ENDS = frozenset({".", "。", "!", "?", "！", "？", "…"})
PROMPT_PREFIX_MAX = 12
COMPLETION_PREFIX_MIN = 5
CLASSIFICATION_RATIO = 3  # at least this many examples per distinct completion on average
MAX_TRACKED_CLASSES = 4096
SAMPLE_ALL = 4096
_SENTENCE_MARKS = (". ", "。", "! ", "? ", "！", "？")  # inside a completion: more than one sentence

_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")
_UPPER = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz")


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]


def _common_suffix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[-1 - i] == b[-1 - i]:
        i += 1
    return a[len(a) - i :] if i else ""


def is_cjk_start(text: str) -> bool:
    """True when the text starts with a CJK character or CJK/full-width punctuation."""
    return bool(text) and _CJK.match(text) is not None


@dataclass(slots=True)
class FieldStats:
    """Running facts about one text field over all rows."""

    n: int = 0
    prefix: str | None = None
    suffix: str | None = None
    first: str | None = None
    all_same: bool = True
    upper: int = 0
    lower: int = 0
    cjk_rows: int = 0
    ws_start: int = 0
    contains: dict[str, int] = field(default_factory=dict)
    sampled: int = 0
    _pending: list[str] | None = None

    def add(self, text: str, candidates: tuple[str, ...]) -> None:
        self.n += 1
        if self.prefix is None or self.suffix is None or self.first is None:
            self.prefix = self.suffix = self.first = text
        else:
            if self.prefix and not text.startswith(self.prefix):
                self.prefix = _common_prefix(self.prefix, text)
            if self.suffix and not text.endswith(self.suffix):
                self.suffix = _common_suffix(self.suffix, text)
            if self.all_same and text != self.first:
                self.all_same = False
        if text[:1] == " ":
            self.ws_start += 1
        # Case and script are ratios: a systematic sample (all of the first rows, then every
        # 16th) measures them as well as every row would, at a fraction of the cost.
        if self.n <= SAMPLE_ALL or not self.n & 15:
            self.sampled += 1
            size = len(text)
            self.upper += size - len(text.translate(_UPPER))
            self.lower += size - len(text.translate(_LOWER))
            if _CJK.search(text) is not None:
                self.cjk_rows += 1
        # Separator/stop choice only needs "does any row contain it": stop looking once seen.
        pending = self._pending
        if pending is None:
            pending = self._pending = list(candidates)
        if pending:
            for c in [c for c in pending if c in text]:
                self.contains[c] = 1
                pending.remove(c)

    def add_many(self, texts: list[str], candidates: tuple[str, ...]) -> str:
        """`add` for a batch of rows, the per-row work done by C-level calls over the batch.

        Returns the batch joined by NUL, for the caller's own searches: no candidate or marker
        searched for holds NUL, so no match can span two rows.
        """
        joined = "\x00".join(texts)
        if not texts:
            return joined
        start = self.n
        self.n += len(texts)
        if self.first is None or self.prefix is None or self.suffix is None:
            self.prefix = self.suffix = self.first = texts[0]
        prefix = self.prefix
        if prefix:
            # a character-wise common prefix is exactly what is wanted here (texts, not paths)
            self.prefix = os.path.commonprefix([prefix, *texts])  # noqa: RUF071
        suffix = self.suffix
        if suffix:
            for text in texts:
                if not text.endswith(suffix):
                    suffix = _common_suffix(suffix, text)
                    if not suffix:
                        break
            self.suffix = suffix
        if self.all_same and texts.count(self.first) != len(texts):
            self.all_same = False
        if joined.count("\x00") == len(texts) - 1:  # NUL only between rows: count row starts
            self.ws_start += joined.count("\x00 ") + (joined[:1] == " ")
        else:
            self.ws_start += sum(1 for text in texts if text[:1] == " ")
        # the same systematic sample as `add`: rows 1..SAMPLE_ALL, then every 16th
        head = texts[: max(0, SAMPLE_ALL - start)]
        first_tail = max(SAMPLE_ALL, start) + 1
        skip = (-first_tail) % 16  # rows whose 1-based number is a multiple of 16
        tail = texts[first_tail - start - 1 + skip :: 16]
        sampled = head + tail
        if sampled:
            self.sampled += len(sampled)
            sample = "\x00".join(sampled)  # NUL is no letter and no CJK: counts add up
            size = len(sample)
            self.upper += size - len(sample.translate(_UPPER))
            self.lower += size - len(sample.translate(_LOWER))
            if _CJK.search(sample) is not None:
                self.cjk_rows += sum(1 for text in sampled if _CJK.search(text) is not None)
        pending = self._pending
        if pending is None:
            pending = self._pending = list(candidates)
        if pending:
            # a one-character search (memchr) rules out every candidate starting with a missing
            # character: for most data that spares all but one or two full searches per batch
            starts = {c[0]: c[0] in joined for c in pending}
            for c in [c for c in pending if starts[c[0]] and c in joined]:
                self.contains[c] = 1
                pending.remove(c)
        return joined

    @property
    def mostly_cjk(self) -> bool:
        return self.sampled > 0 and self.cjk_rows * 2 >= self.sampled


@dataclass(slots=True)
class Heuristics:
    """Prompt/completion statistics for separator, stop sequence and data-shape advice."""

    prompt: FieldStats = field(default_factory=FieldStats)
    completion: FieldStats = field(default_factory=FieldStats)
    multi_sentence: int = 0  # 0 or 1: only "is there any" matters
    classes: set[int] = field(default_factory=set)
    classes_overflow: bool = False
    prompt_chars: int = 0

    def add(self, prompt: str, completion: str) -> None:
        self.prompt.add(prompt, (*SEPARATOR_OPTIONS, "\n"))
        self.completion.add(completion, (*STOP_OPTIONS, "。"))
        self.prompt_chars += len(prompt)
        if not self.multi_sentence:
            body = completion.rstrip()[:-1]
            if any(p in body for p in _SENTENCE_MARKS):
                self.multi_sentence += 1
        if not self.classes_overflow:
            self.classes.add(hash(completion))
            if len(self.classes) > MAX_TRACKED_CLASSES:
                self.classes_overflow = True
                self.classes.clear()

    def add_many(self, prompts: list[str], completions: list[str]) -> None:
        """`add` for a batch of rows, in order."""
        self.prompt.add_many(prompts, (*SEPARATOR_OPTIONS, "\n"))
        joined = self.completion.add_many(completions, (*STOP_OPTIONS, "。"))
        self.prompt_chars += sum(map(len, prompts))
        # a row's body is its text less trailing space and last character: no marker anywhere in
        # the batch means none in any body, which spares the per-row look for one-sentence data
        if not self.multi_sentence and any(p in joined for p in _SENTENCE_MARKS):
            for completion in completions:
                body = completion.rstrip()[:-1]
                if any(p in body for p in _SENTENCE_MARKS):
                    self.multi_sentence += 1
                    break
        if not self.classes_overflow:
            for completion in completions:
                self.classes.add(hash(completion))
                if len(self.classes) > MAX_TRACKED_CLASSES:
                    self.classes_overflow = True
                    self.classes.clear()
                    break

    @property
    def n(self) -> int:
        return self.completion.n

    @property
    def task(self) -> str:
        """The classic tool's task inference."""
        if self.prompt_chars == 0:
            return "open-ended generation"
        if not self.classes_overflow and len(self.classes) < self.n / CLASSIFICATION_RATIO:
            return "classification"
        return "conditional generation"

    def separator(self) -> str:
        """The prompt separator to add, or "" when prompts already share a suffix."""
        if self.prompt.suffix:
            return ""
        for option in SEPARATOR_OPTIONS:
            if option == " ->" and self.prompt.contains.get("\n"):
                continue
            if self.prompt.contains.get(option):
                continue
            return option
        return SEPARATOR_DEFAULT

    def stop_candidate(self, avoid_sentence_ends: bool) -> str:
        for option in STOP_OPTIONS:
            if avoid_sentence_ends and option == ".":
                continue
            if self.completion.contains.get(option):
                continue
            return option
        return STOP_DEFAULT

    def poor_stop(self) -> bool:
        """Completions end with sentence punctuation that also occurs inside multi-sentence answers."""
        suffix = (self.completion.suffix or "").strip()
        return (
            bool(suffix) and suffix[-1:] in SENTENCE_ENDS and len(suffix) <= 2 and (self.multi_sentence > 0)
        )
