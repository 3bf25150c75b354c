"""The preparation engine: one streaming pass to check and count, a second to write outputs."""

from __future__ import annotations

import codecs
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from service.core.datasets import checks, reader
from service.core.datasets import reinforcement as rl
from service.core.datasets.checks import (
    CHAT,
    ERROR,
    INFO,
    PREFERENCE,
    PROMPT_COMPLETION,
    REINFORCEMENT,
    WARNING,
)
from service.core.datasets.dedupe import DigestIndex, digest
from service.core.datasets.heuristics import (
    COMPLETION_PREFIX_MIN,
    PROMPT_PREFIX_MAX,
    Heuristics,
    is_cjk_start,
)
from service.core.datasets.models import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    default_epochs,
    resolve_model,
    training_cost_usd,
)
from service.core.datasets.tokens import (
    ENCODINGS,
    POOL_SIZE,
    TokenCounter,
    count_each,
    counting_pool,
    load,
    pool,
)

if TYPE_CHECKING:
    from service.core.graders.spec import Grader

log = logging.getLogger("tuneline.datasets")

MIN_EXAMPLES = 10
RECOMMENDED_EXAMPLES = 100
RATIO_SAMPLE = 500  # rows tokenised with the other encoding to estimate other models' tokens
_DIGEST_MASK = (1 << 64) - 1

SPLIT_DROP, SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_TEST = 0, 1, 2, 3
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_VALIDATION: "validation", SPLIT_TEST: "test"}

# File-level errors make a file unusable even when invalid lines may be skipped.
FILE_LEVEL = frozenset(
    {
        "empty_file",
        "unsupported_encoding",
        "binary_content",
        "too_few_examples",
        "format_not_supported",
        "missing_column",
        "unknown_model",
    }
)


@dataclass
class PrepareOptions:
    """How to check and prepare a file; every fix can be switched off."""

    model: str = DEFAULT_MODEL
    system_prompt: str | None = None
    skip_invalid_lines: bool = False
    dedupe: bool = True
    drop_empty: bool = True
    to_chat: bool | None = None  # None: convert prompt/completion when the model is chat-style
    split_validation: float = 0.0
    split_test: float = 0.0
    seed: int = 42
    convert_encoding: bool = False
    completion_fixes: bool = True  # separator, stop sequence, leading space (completion models)
    max_findings_per_code: int = 20
    n_epochs: int | None = None
    # The job's OpenAI `method.type` (None: tell from the data); for reinforcement, its grader
    # (OpenAI's JSON: every row must have the fields it reads) and hyperparameters (the estimate).
    method: str | None = None
    grader: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None

    def validate(self) -> None:
        """Raise ValueError on options that cannot work together."""
        resolve_model(self.model)
        for name in ("split_validation", "split_test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.split_validation + self.split_test >= 1.0:
            raise ValueError("split_validation + split_test must leave some training data")
        if self.n_epochs is not None and not 1 <= self.n_epochs <= 50:
            raise ValueError("n_epochs must be between 1 and 50")
        if self.max_findings_per_code < 0:
            raise ValueError("max_findings_per_code must be >= 0")
        if self.grader is not None:
            self.parsed_grader()

    def parsed_grader(self) -> Grader | None:
        """The grader's shape and templates (whether it may run here was decided at create)."""
        if self.grader is None:
            return None
        # Imported here: graders bring the text-similarity libraries, which plain preparation skips.
        from service.core.errors import TunelineError
        from service.core.graders import spec

        try:
            return spec.parse(
                self.grader, spec.Policy(templates_only=True), root="method.reinforcement.grader"
            )
        except TunelineError as exc:
            raise ValueError(exc.message) from None


@dataclass
class Report:
    """The result of preparing one file; `to_dict()` is the JSON shape served by the API."""

    format: str = "unknown"
    encoding: str = "utf-8"
    model: str = DEFAULT_MODEL
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "lines",
                "examples",
                "valid",
                "invalid",
                "duplicates",
                "empty",
                "kept",
                "train",
                "validation",
                "test",
            ),
            0,
        )
    )
    findings: list[dict[str, Any]] = field(default_factory=list)
    finding_totals: dict[str, int] = field(default_factory=dict)
    fixes: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] = field(default_factory=dict)
    prepared: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    skip_invalid_lines: bool = False
    _errors: dict[str, int] = field(default_factory=dict)
    _file_errors: int = 0

    @property
    def usable(self) -> bool:
        """True when the prepared data can be used for training."""
        if self._file_errors or self.counts["kept"] == 0:
            return False
        return self.skip_invalid_lines or not self._errors

    @property
    def status(self) -> str:
        return "processed" if self.usable else "error"

    @property
    def status_details(self) -> str:
        """One line for a file's `status_details`: why it cannot be used (empty when usable)."""
        if self.usable:
            return ""
        errors = [f for f in self.findings if f["severity"] == ERROR]
        total = sum(self._errors.values()) + self._file_errors
        if not errors:
            return "no usable examples"
        shown = []
        for f in errors[:3]:
            where = f"line {f['line']} " if f.get("line") else ""
            shown.append(f"{where}{f['code']}" + (f" ({f['field']})" if f.get("field") else ""))
        more = f" and {total - len(shown)} more" if total > len(shown) else ""
        head = f"{total} error{'s' if total != 1 else ''}: "
        return head + ", ".join(shown) + more + f" — {errors[0]['message']}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "encoding": self.encoding,
            "model": self.model,
            "counts": dict(self.counts),
            "findings": list(self.findings),
            "finding_totals": dict(self.finding_totals),
            "fixes": list(self.fixes),
            "tokens": dict(self.tokens),
            "estimate": dict(self.estimate),
            "prepared": dict(self.prepared),
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "status": self.status,
            "status_details": self.status_details,
        }


class _Collector:
    """Findings: first N per code kept, every one counted, in the order of the rows they are about.

    Token counts arrive a batch after their row was read, so each finding carries the position of
    its row (`at`, set by the reader loop, or `after` for a finding about an earlier row) and
    `finalize` puts findings and totals back in row order, as a one-row-at-a-time pass adds them.
    """

    END = 1 << 62  # position of file-level findings added after the last row

    def __init__(self, report: Report, limit: int) -> None:
        self.report = report
        self.limit = limit
        self.per_code: dict[str, int] = {}
        self.at = 0
        self._keys: list[tuple[int, int]] = []
        self._first: dict[str, tuple[int, int]] = {}

    def add(
        self,
        code: str,
        severity: str,
        line: int | None,
        field_: str | None,
        message: str,
        index: int | None = None,
        after: int | None = None,
    ) -> None:
        key = (self.at, 0) if after is None else (after, 1)
        n = self.per_code.get(code, 0) + 1
        self.per_code[code] = n
        r = self.report
        if n == 1:
            self._first[code] = key
        r.finding_totals[code] = r.finding_totals.get(code, 0) + 1
        if severity == ERROR:
            if line is None or code in FILE_LEVEL:
                r._file_errors += 1
            else:
                r._errors[code] = r._errors.get(code, 0) + 1
        if n <= self.limit:
            finding: dict[str, Any] = {
                "code": code,
                "severity": severity,
                "line": line,
                "field": field_,
                "message": message,
            }
            if index is not None:
                finding["index"] = index
            r.findings.append(finding)
            self._keys.append(key)

    def finalize(self) -> None:
        r = self.report
        order = sorted(range(len(r.findings)), key=self._keys.__getitem__)  # stable
        r.findings = [r.findings[i] for i in order]
        self._keys = [self._keys[i] for i in order]
        totals = r.finding_totals
        r.finding_totals = {c: totals[c] for c in sorted(totals, key=self._first.__getitem__)}


@dataclass
class _Plan:
    """What pass 1 decided pass 2 must do to each kept row."""

    kind: str | None = None
    to_chat: bool = False
    separator: str = ""
    stop: str = ""
    leading_space: bool = False
    system_prompt: str | None = None


def _records(
    path: Path, layout: str, encoding: str, progress: reader.ProgressFn | None
) -> Iterator[reader.Record]:
    if layout in ("csv", "tsv"):
        return reader.iter_csv(path, encoding, "\t" if layout == "tsv" else None, progress)
    if layout == "json_array":
        return reader.iter_json_array(path, encoding, progress)
    return reader.iter_jsonl(path, encoding, progress)


def _csv_value(header: list[str], row: dict[str, str]) -> dict[str, Any]:
    return {k.lower(): v for k, v in row.items() if k}


def _split_bucket(key: bytes, seed: int, validation: float, test: float) -> int:
    if validation <= 0 and test <= 0:
        return SPLIT_TRAIN
    h = blake2b(key, digest_size=8, key=str(seed).encode()).digest()
    x = int.from_bytes(h, "big") / 2**64
    if x < test:
        return SPLIT_TEST
    if x < test + validation:
        return SPLIT_VALIDATION
    return SPLIT_TRAIN


def _prompt_key(checked: checks.Checked) -> bytes:
    """What identifies a prompt, so all rows sharing it fall on one side of the split."""
    if checked.kind == PROMPT_COMPLETION:
        return checked.prompt.encode("utf-8", "surrogatepass")
    value = checked.value or {}
    if checked.kind == PREFERENCE:
        return json.dumps(value.get("input"), sort_keys=True, ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    messages = value.get("messages") or []
    if checked.kind == REINFORCEMENT:
        last = len(messages)  # the whole conversation is the prompt
    else:
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=0)
    return json.dumps(messages[:last], sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _missing_fields_check(grader: Grader | None) -> Callable[[dict[str, Any]], list[checks.Issue]] | None:
    """For a reinforcement job: the findings of a row that lacks a field its grader reads."""
    if grader is None:
        return None
    from service.core.graders.run import missing_fields

    def check(row: dict[str, Any]) -> list[checks.Issue]:
        return [
            checks.Issue("grader_missing_field", ERROR, m.field, m.message)
            for m in missing_fields(grader, row, root="method.reinforcement.grader")
        ]

    return check


def _row_digest(checked: checks.Checked) -> int:
    """Digest of a chat or preference row, unknown keys left out (prompt/completion rows hash)."""
    value = {k: v for k, v in (checked.value or {}).items() if k not in checked.unknown_keys}
    return digest(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))


Meta = tuple[int, int, int | None, int, int]  # record position, line, element index, bucket, row ordinal


def _value_texts(value: Any, texts: list[str]) -> None:
    """What `TokenCounter.value` tokenises: a string, nothing for null, else the compact JSON."""
    if isinstance(value, str):
        texts.append(value)
    elif value is not None:
        texts.append(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _message_parts(messages: list[dict[str, Any]], texts: list[str], priming: bool = True) -> int:
    """`TokenCounter.messages` split into its constant tokens (returned) and the texts to count."""
    const = TokenCounter.REPLY_PRIMING if priming else 0
    for message in messages:
        const += TokenCounter.TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "weight":
                continue
            _value_texts(value, texts)  # a role is a short string: its tokens, as `short` counts them
            if key == "name":
                const += TokenCounter.TOKENS_PER_NAME
    return const


@dataclass(frozen=True, slots=True)
class _Count:
    """Token counts on their way from the pool, and what they are counts of."""

    future: Future[list[int]]
    encoding: str
    texts: list[str]


class _Tokens:
    """Token counts for the target model, counted in batches on the thread pool while the reader
    goes on, handed back in row order; plus a sample in the other encoding for estimates.

    Rows wait in a batch of at most BATCH_TEXTS texts or BATCH_CHARS characters, and at most
    IN_FLIGHT batches are out, so memory stays bounded whatever the file's size.
    """

    BATCH_TEXTS = 4096
    BATCH_CHARS = 1 << 21
    IN_FLIGHT = 3

    def __init__(
        self, spec: ModelSpec, plan: _Plan, finish: Callable[[int, Meta], None], executor: Executor
    ) -> None:
        self.encoding = spec.encoding
        other = [e for e in ENCODINGS if e != spec.encoding]
        self.other_encoding = other[0] if other else None
        self.plan = plan
        self._finish = finish
        self._pool = executor
        self._workers = POOL_SIZE
        # the target vocabulary loads in the pool while the first batch is read
        self._pool.submit(load, self.encoding)
        self._counter: TokenCounter | None = None
        self._overhead: int | None = None
        self._texts: list[str] = []
        # (constant tokens, number of texts, add chat overhead, sample mode, meta); sample mode:
        # 0 none, 1 the row's content tokens, 2 all its tokens (as the one-row pass sampled them)
        self._rows: list[tuple[int, int, bool, int, Meta]] = []
        self._chars = 0
        self._other_texts: list[str] = []
        # each batch's counts to come, with its texts (to count again should a worker process die)
        self._in_flight: deque[tuple[list[_Count], list[tuple[int, int, bool, int, Meta]]]] = deque()
        self._other_counts: list[_Count] = []
        self.sampled = 0
        self.sample_target = 0
        self.sample_other = 0

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter(self.encoding)
        return self._counter

    def _sampling(self) -> bool:
        if self.other_encoding is None or self.sampled >= RATIO_SAMPLE:
            return False
        self.sampled += 1
        return True

    def _add(self, const: int, start: int, overhead: bool, sample: int, meta: Meta, chars: int) -> None:
        self._rows.append((const, len(self._texts) - start, overhead, sample, meta))
        self._chars += chars
        if len(self._texts) >= self.BATCH_TEXTS or self._chars >= self.BATCH_CHARS:
            self.flush()

    def prompt_completion(self, prompt: str, completion: str, meta: Meta) -> None:
        # the row every file of this format repeats: inlined, no helper calls
        texts = self._texts
        texts += (prompt, completion)
        sample = 0
        if self.sampled < RATIO_SAMPLE and self._sampling():
            sample = 1
            self._other_texts += (prompt, completion)
        self._rows.append((0, 2, self.plan.to_chat, sample, meta))
        self._chars += len(prompt) + len(completion)
        if len(texts) >= self.BATCH_TEXTS or self._chars >= self.BATCH_CHARS:
            self.flush()

    def chat(self, value: dict[str, Any], meta: Meta) -> None:
        texts = self._texts
        start = len(texts)
        const = _message_parts(value["messages"], texts)
        if value.get("tools"):
            _value_texts(value["tools"], texts)
        sample = 0
        if self._sampling():
            sample = 2
            self.sample_other += _message_parts(value["messages"], self._other_texts)
        self._add(const, start, False, sample, meta, sum(map(len, texts[start:])))

    def preference(self, value: dict[str, Any], meta: Meta) -> None:
        texts = self._texts
        start = len(texts)
        const = _message_parts(value["input"]["messages"], texts)
        const += _message_parts(value["preferred_output"], texts, priming=False)
        const += _message_parts(value["non_preferred_output"], texts, priming=False)
        self._add(const, start, False, 0, meta, sum(map(len, texts[start:])))

    def flush(self) -> None:
        """Send the waiting rows to the pool; hand back the oldest batch when too many are out."""
        texts, rows = self._texts, self._rows
        if rows:
            size = -(-len(texts) // self._workers) or 1
            futures = [self._submit(self.encoding, texts[i : i + size]) for i in range(0, len(texts), size)]
            if self._other_texts and self.other_encoding is not None:
                self._other_counts.append(self._submit(self.other_encoding, self._other_texts))
            self._in_flight.append((futures, rows))
            self._texts, self._rows, self._chars, self._other_texts = [], [], 0, []
        while len(self._in_flight) >= self.IN_FLIGHT:
            self._drain()

    def _drain(self) -> None:
        futures, rows = self._in_flight.popleft()
        counts: list[int] = []
        for f in futures:
            counts += self._result(f)
        pos = 0
        overhead = 0
        finish = self._finish
        for const, k, chat, sample, meta in rows:
            content = const + sum(counts[pos : pos + k])
            pos += k
            n = content
            if chat:
                if self._overhead is None:
                    self._overhead = chat_overhead(self.counter, self.plan.system_prompt)
                overhead = self._overhead
                n += overhead
            if sample:
                self.sample_target += content if sample == 1 else n
            finish(n, meta)

    def close(self) -> None:
        """Count and hand back every row still waiting."""
        self.flush()
        while self._in_flight:
            self._drain()
        for f in self._other_counts:
            self.sample_other += sum(self._result(f))
        self._other_counts = []

    def _submit(self, encoding: str, texts: list[str]) -> _Count:
        try:
            future = self._pool.submit(count_each, encoding, texts)
        except BrokenExecutor:
            self._on_threads()
            future = self._pool.submit(count_each, encoding, texts)
        return _Count(future, encoding, texts)

    def _result(self, count: _Count) -> list[int]:
        try:
            return count.future.result()
        except BrokenExecutor:
            self._on_threads()
            return count_each(count.encoding, count.texts)

    def _on_threads(self) -> None:
        """A worker process died (killed, out of memory): what it held is counted again here, and
        the rest of the file on the threads."""
        if self._pool is not pool():
            log.warning("a token-counting process died; counting on threads from now on")
            self._pool = pool()

    @property
    def ratio(self) -> float:
        """Other-encoding tokens per target-encoding token, measured on a sample."""
        if not self.sample_target:
            return 1.0
        return self.sample_other / self.sample_target


def chat_overhead(counter: TokenCounter, system_prompt: str | None) -> int:
    """Cookbook overhead of a [system?, user, assistant] conversation, beyond its two texts."""
    n = counter.REPLY_PRIMING + 2 * counter.TOKENS_PER_MESSAGE
    n += counter.short("user") + counter.short("assistant")
    if system_prompt:
        n += counter.TOKENS_PER_MESSAGE + counter.short("system") + counter.short(system_prompt)
    return n


def prepare_file(
    path: Path,
    options: PrepareOptions,
    out_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check a dataset file, count its tokens, estimate cost and (with out_dir) write prepared splits.

    `progress`, when given, is called with the number of bytes consumed since its last call.
    """
    path = Path(path)
    options.validate()
    spec = resolve_model(options.model)
    report = Report(model=spec.name, skip_invalid_lines=options.skip_invalid_lines)
    out = _Collector(report, options.max_findings_per_code)

    sniffed = reader.sniff(path)
    report.encoding = sniffed.encoding
    if sniffed.empty:
        out.add("empty_file", ERROR, None, None, "the file is empty")
        _finish(report, spec, options, _Plan(), None, {})
        return report
    if sniffed.binary:
        out.add(
            "binary_content",
            ERROR,
            sniffed.binary_line,
            None,
            f"this is not a text dataset: it looks like binary data ({sniffed.binary})",
        )
        _finish(report, spec, options, _Plan(), None, {})
        return report
    encoding = sniffed.encoding
    if encoding not in ("utf-8", "utf-8-sig"):
        named = "GB18030/GBK" if encoding == "gb18030" else encoding.upper()
        if not options.convert_encoding or encoding == "unknown":
            out.add(
                "unsupported_encoding",
                ERROR,
                sniffed.bad_line if encoding not in ("utf-16", "utf-32") else 1,
                None,
                f"the file is not UTF-8: it looks {named}-encoded. Save it as UTF-8, or ask for "
                "conversion (convert_encoding / --convert-encoding)",
            )
            _finish(report, spec, options, _Plan(), None, {})
            return report
        report.fixes.append(
            {"code": "converted_encoding", "message": f"decoded from {named} to UTF-8", "count": 1}
        )

    layout = reader.detect_layout(path, sniffed)
    if layout in ("csv", "tsv", "json_array"):
        report.fixes.append(
            {
                "code": f"converted_from_{layout}",
                "message": f"read a {layout.replace('_', ' ').upper()} file; written as JSONL",
                "count": 1,
            }
        )

    plan = _Plan(system_prompt=options.system_prompt)
    to_chat_default = spec.style == "chat" if options.to_chat is None else options.to_chat
    heur = Heuristics()
    heur_prompts: list[str] = []
    heur_completions: list[str] = []
    # sized for the rows a file of this size likely holds, so the table seldom grows while reading
    index = DigestIndex.for_rows(path.stat().st_size // 512)
    dest = bytearray()  # one byte per record (blank lines included): where pass 2 sends it
    histogram: dict[int, int] = {}
    counts = report.counts
    csv_header: list[str] | None = None
    kinds_seen: dict[str, int] = {}
    blank = 0
    last_line = 0
    splitting = options.split_validation > 0 or options.split_test > 0
    drop_empty = options.drop_empty
    dedupe = options.dedupe

    limit = spec.max_tokens_per_example
    grader = options.parsed_grader()
    missing_fields = _missing_fields_check(grader)
    messages_kind = {"reinforcement": REINFORCEMENT, "supervised": CHAT}.get(options.method or "")

    def finish_row(n_tokens: int, meta: Meta) -> None:
        position, line, element, bucket, ordinal = meta
        if n_tokens > limit:
            counts["invalid"] += 1
            out.add(
                "too_many_tokens",
                ERROR,
                line,
                None,
                f"{n_tokens} tokens; {spec.name} trains on at most {limit} "
                "tokens per example (the rest would be cut off)",
                element,
                after=ordinal,
            )
            return
        histogram[n_tokens] = histogram.get(n_tokens, 0) + 1
        dest[position] = bucket
        counts["kept"] += 1
        counts[SPLIT_NAMES[bucket]] += 1

    with counting_pool(path.stat().st_size, spec.encoding) as executor:
        tokens = _Tokens(spec, plan, finish_row, executor)

        def flush_heuristics() -> None:
            heur.add_many(heur_prompts, heur_completions)
            heur_prompts.clear()
            heur_completions.clear()

        ordinal = 0
        for rec in _records(path, layout, encoding, progress):
            last_line = rec.line
            if csv_header is None and layout in ("csv", "tsv") and rec.value is not None:
                csv_header = list(rec.value["__csv_header__"])
                lowered = [h.lower() for h in csv_header]
                missing = [c for c in ("prompt", "completion") if c not in lowered]
                if missing:
                    out.add(
                        "missing_column",
                        ERROR,
                        1,
                        missing[0],
                        f"header has no `{'`, `'.join(missing)}` column; found: {', '.join(csv_header)}",
                    )
                    break
                continue
            ordinal += 1
            out.at = ordinal
            position = len(dest)
            dest.append(SPLIT_DROP)
            if rec.blank:
                blank += 1
                out.add("blank_line", WARNING, rec.line, None, "blank line skipped")
                continue
            counts["examples"] += 1
            if rec.error is not None:
                counts["invalid"] += 1
                out.add(rec.error, ERROR, rec.line, rec.field, rec.message, rec.index)
                continue
            value = rec.value
            if csv_header is not None and isinstance(value, dict):
                value = _csv_value(csv_header, value)
            # The common row, {"prompt": str, "completion": str} with text in both, has no finding:
            # take it without building a Checked.
            checked: checks.Checked | None = None
            prompt: Any = ""
            completion: Any = ""
            common = False
            if type(value) is dict and len(value) == 2:
                prompt = value.get("prompt")
                completion = value.get("completion")
                common = bool(
                    type(prompt) is str
                    and type(completion) is str
                    and prompt
                    and completion
                    and not prompt.isspace()
                    and not completion.isspace()
                )
            if not common:
                # A messages row is read as the file's format once known (else the job's, else its own).
                expect = plan.kind if plan.kind in (CHAT, REINFORCEMENT) else messages_kind
                checked = checks.check_value(value, expect)
                if checked.kind == REINFORCEMENT and not checked.has_error and missing_fields is not None:
                    checked.issues += missing_fields(checked.value or {})
            if checked is None:
                kind: str | None = PROMPT_COMPLETION
                if plan.kind is None:
                    plan.kind = kind
                    plan.to_chat = to_chat_default
                elif plan.kind != kind:
                    checked = checks.Checked(kind, prompt=prompt, completion=completion)
            if checked is not None:
                kind = checked.kind
                if kind is not None and not checked.has_error:
                    if plan.kind is None:
                        plan.kind = kind
                        plan.to_chat = kind == PROMPT_COMPLETION and to_chat_default
                    elif kind != plan.kind:
                        checked.issues.append(
                            checks.Issue(
                                "mixed_format",
                                ERROR,
                                None,
                                f"a {kind} example in a {plan.kind} file: use one format per file",
                            )
                        )
                for issue in checked.issues:
                    severity = issue.severity
                    if issue.code == "empty_field" and not drop_empty:
                        severity = ERROR
                    out.add(issue.code, severity, rec.line, issue.field, issue.message, rec.index)
                if kind is not None:
                    kinds_seen[kind] = kinds_seen.get(kind, 0) + 1
                if checked.has_error or (checked.empty and not drop_empty):
                    counts["invalid"] += 1
                    continue
                if checked.empty:
                    counts["empty"] += 1
                    continue
                prompt, completion = checked.prompt, checked.completion
            else:
                kinds_seen[PROMPT_COMPLETION] = kinds_seen.get(PROMPT_COMPLETION, 0) + 1
            if kind == PROMPT_COMPLETION:
                # Python's (seeded siphash) hash of the pair: a 64-bit digest, no bytes copied, valid for
                # this pass only, which is all duplicate detection needs
                row_digest = hash((prompt, completion)) & _DIGEST_MASK or 1
            else:
                assert checked is not None
                row_digest = _row_digest(checked)
            first = index.setdefault(row_digest, rec.line)
            if first:
                counts["duplicates"] += 1
                out.add(
                    "duplicate",
                    WARNING if dedupe else INFO,
                    rec.line,
                    None,
                    f"duplicate of line {first}" + (" (dropped)" if dedupe else ""),
                    rec.index,
                )
                if dedupe:
                    continue
            bucket = SPLIT_TRAIN
            if splitting:
                key = prompt.encode() if kind == PROMPT_COMPLETION else _prompt_key(checked)  # type: ignore[arg-type]
                bucket = _split_bucket(key, options.seed, options.split_validation, options.split_test)
            meta = (position, rec.line, rec.index, bucket, ordinal)
            if kind == PROMPT_COMPLETION:
                heur_prompts.append(prompt)
                heur_completions.append(completion)
                if len(heur_prompts) >= _Tokens.BATCH_TEXTS:
                    flush_heuristics()
                tokens.prompt_completion(prompt, completion, meta)
            elif kind in (CHAT, REINFORCEMENT):
                tokens.chat(checked.value or {}, meta)  # type: ignore[union-attr]
            else:
                tokens.preference(checked.value or {}, meta)  # type: ignore[union-attr]
        tokens.close()
    flush_heuristics()
    out.at = _Collector.END
    counts["lines"] = last_line if layout == "jsonl" else reader.count_lines(path)
    counts["valid"] = counts["examples"] - counts["invalid"]
    if blank:
        report.fixes.append({"code": "skipped_blank_lines", "message": "blank lines skipped", "count": blank})
    if len(kinds_seen) > 1:
        report.format = "mixed"
    elif plan.kind is not None:
        report.format = plan.kind

    _check_format_for_model(out, spec, plan, options)
    if plan.kind == PROMPT_COMPLETION and heur.n:
        _apply_heuristics(out, report, spec, plan, heur, options)

    if counts["kept"] < MIN_EXAMPLES and not report._file_errors:
        out.add(
            "too_few_examples",
            ERROR,
            None,
            None,
            f"{counts['kept']} usable examples; fine-tuning needs at least {MIN_EXAMPLES}",
        )
    elif counts["kept"] < RECOMMENDED_EXAMPLES and counts["kept"]:
        out.add(
            "too_few_examples",
            WARNING,
            None,
            None,
            f"{counts['kept']} examples; {RECOMMENDED_EXAMPLES} or more usually train better",
        )
    if counts["duplicates"] and options.dedupe:
        report.fixes.append(
            {
                "code": "dropped_duplicates",
                "message": "dropped exact duplicates",
                "count": counts["duplicates"],
            }
        )
    if counts["empty"]:
        report.fixes.append(
            {"code": "dropped_empty", "message": "dropped rows with empty fields", "count": counts["empty"]}
        )
    if options.skip_invalid_lines and counts["invalid"]:
        report.fixes.append(
            {"code": "skipped_invalid", "message": "skipped invalid lines", "count": counts["invalid"]}
        )
    if plan.to_chat and counts["kept"]:
        report.fixes.append(
            {
                "code": "converted_to_chat",
                "message": "prompt/completion converted to chat messages"
                + (" with a system prompt" if plan.system_prompt else ""),
                "count": counts["kept"],
            }
        )
    if options.split_validation or options.split_test:
        report.fixes.append(
            {
                "code": "split",
                "message": f"split by prompt with seed {options.seed}: "
                f"{counts['train']} train, {counts['validation']} validation, {counts['test']} test",
                "count": counts["validation"] + counts["test"],
            }
        )

    out.finalize()
    _finish(report, spec, options, plan, tokens, histogram)
    if out_dir is not None and report.usable:
        _write(path, layout, encoding, csv_header, dest, plan, Path(out_dir), report)
    return report


def _check_format_for_model(out: _Collector, spec: ModelSpec, plan: _Plan, options: PrepareOptions) -> None:
    if plan.kind is None:
        return
    if spec.style == "completion" and plan.kind != PROMPT_COMPLETION:
        out.add(
            "format_not_supported",
            ERROR,
            None,
            None,
            f"{spec.name} is a completion model: it trains on prompt/completion, not {plan.kind}",
        )
    elif spec.style == "chat" and plan.kind == PROMPT_COMPLETION and not plan.to_chat:
        out.add(
            "format_not_supported",
            ERROR,
            None,
            None,
            f"{spec.name} is a chat model: prompt/completion data must be converted to chat",
        )
    elif plan.kind == PREFERENCE and "dpo" not in spec.methods:
        out.add(
            "format_not_supported",
            ERROR,
            None,
            None,
            f"{spec.name} does not support preference (DPO) fine-tuning",
        )


def _apply_heuristics(
    out: _Collector,
    report: Report,
    spec: ModelSpec,
    plan: _Plan,
    heur: Heuristics,
    options: PrepareOptions,
) -> None:
    """The classic tool's advice, only where it means something for this model and language."""
    p, c = heur.prompt, heur.completion
    completion_model = not plan.to_chat
    if p.all_same and heur.n > 1:
        out.add("identical_prompts", WARNING, None, "prompt", "all prompts are identical")
    if c.all_same and heur.n > 1:
        out.add("identical_completions", WARNING, None, "completion", "all completions are identical")
    if p.prefix and len(p.prefix) > PROMPT_PREFIX_MAX and not p.all_same:
        out.add(
            "common_prefix",
            WARNING,
            None,
            "prompt",
            f"all prompts start with {p.prefix[:40]!r}: fine-tuning needs no repeated instruction",
        )
    if c.prefix and len(c.prefix) >= COMPLETION_PREFIX_MIN and not c.all_same:
        out.add(
            "common_prefix",
            WARNING,
            None,
            "completion",
            f"all completions start with {c.prefix[:40]!r}: put only the answer in the completion",
        )
    for name, stats in (("prompt", p), ("completion", c)):
        if not stats.mostly_cjk and stats.upper * 2 > stats.lower and stats.upper > 0:
            out.add(
                "upper_case",
                WARNING,
                None,
                name,
                f"more than a third of the letters in `{name}` are upper case; mixed case trains better",
            )
    task = heur.task
    if task == "classification":
        out.add(
            "classification_like",
            INFO,
            None,
            "completion",
            f"{len(heur.classes)} distinct completions over {heur.n} examples: looks like classification",
        )
    if not completion_model:
        return
    cjk = c.mostly_cjk
    # separator
    if p.suffix:
        out.add("common_prompt_suffix", INFO, None, "prompt", f"prompts end with separator {p.suffix!r}")
    elif task != "open-ended generation":
        sep = heur.separator()
        if options.completion_fixes:
            plan.separator = sep
            report.fixes.append(
                {
                    "code": "added_separator",
                    "message": f"appended separator {sep!r} to every prompt",
                    "count": heur.n,
                }
            )
        else:
            out.add(
                "no_prompt_separator",
                WARNING,
                None,
                "prompt",
                f"prompts share no ending; add a separator such as {sep!r}",
            )
    # stop sequence
    if task not in ("open-ended generation", "classification"):
        poor = heur.poor_stop()
        if c.suffix and not poor:
            out.add(
                "common_completion_suffix", INFO, None, "completion", f"completions end with {c.suffix!r}"
            )
        else:
            stop = heur.stop_candidate(avoid_sentence_ends=poor or cjk)
            if poor:
                out.add(
                    "poor_stop_sequence",
                    WARNING,
                    None,
                    "completion",
                    f"completions end with {c.suffix!r}, which also ends sentences inside "
                    f"multi-sentence answers; use a distinct stop sequence such as {stop!r}",
                )
            if options.completion_fixes:
                plan.stop = stop
                report.fixes.append(
                    {
                        "code": "added_stop_sequence",
                        "message": f"appended stop sequence {stop!r}",
                        "count": heur.n,
                    }
                )
            elif not poor:
                out.add(
                    "no_stop_sequence",
                    WARNING,
                    None,
                    "completion",
                    f"completions share no ending; add a stop sequence such as {stop!r}",
                )
    # leading space: helps English BPE, but an ASCII space before CJK text is just noise
    if c.ws_start != c.n:
        if cjk:
            out.add(
                "leading_space_skipped",
                INFO,
                None,
                "completion",
                "completions are Chinese/CJK: no leading space added",
            )
        elif options.completion_fixes:
            plan.leading_space = True
            report.fixes.append(
                {
                    "code": "added_leading_space",
                    "message": "prefixed completions with a space",
                    "count": c.n - c.ws_start,
                }
            )
        else:
            out.add(
                "completion_leading_space",
                WARNING,
                None,
                "completion",
                "completions should start with a space for completion models",
            )


def _finish(
    report: Report,
    spec: ModelSpec,
    options: PrepareOptions,
    plan: _Plan,
    tokens: _Tokens | None,
    histogram: dict[int, int],
) -> None:
    counts = report.counts
    extra = 0
    if tokens is not None and plan.kind == PROMPT_COMPLETION and not plan.to_chat:
        c = tokens.counter
        extra = (c.text(plan.separator) if plan.separator else 0) + (c.text(plan.stop) if plan.stop else 0)
    total = sum((n + extra) * k for n, k in histogram.items())
    n_rows = sum(histogram.values())
    stats: dict[str, Any] = {"encoding": spec.encoding, "total": total}
    if n_rows:
        ordered = sorted(histogram)
        rank = max(1, math.ceil(0.95 * n_rows))
        seen = 0
        p95 = ordered[-1]
        for n in ordered:
            seen += histogram[n]
            if seen >= rank:
                p95 = n
                break
        stats.update(
            min=ordered[0] + extra,
            mean=round(total / n_rows, 1),
            p95=p95 + extra,
            max=ordered[-1] + extra,
        )
    else:
        stats.update(min=0, mean=0.0, p95=0, max=0)
    # billed tokens count the training split only
    train_share = counts["train"] / counts["kept"] if counts["kept"] else 0.0
    billed = round(
        sum(min(spec.max_tokens_per_example, n + extra) * k for n, k in histogram.items()) * train_share
    )
    stats["billed_per_epoch"] = billed
    report.tokens = stats
    n_epochs = options.n_epochs or default_epochs(counts["train"])
    report.estimate = {
        "n_epochs": n_epochs,
        "n_epochs_auto": options.n_epochs is None,
        "prices_as_of": _prices_date(),
        "candidates": _candidates(report, spec, plan, tokens, histogram, extra, train_share, n_epochs),
    }
    if plan.kind == REINFORCEMENT:
        # Sampled answers and steps of a run on the training split (the job's knobs, else defaults).
        report.estimate["reinforcement"] = rl.estimate(counts["train"], n_epochs, options.hyperparameters)
    report.prepared = {
        "format": "chat" if plan.to_chat else (plan.kind or "unknown"),
        "separator": plan.separator or None,
        "stop": plan.stop or None,
        "leading_space": plan.leading_space,
        "system_prompt": plan.system_prompt if plan.to_chat else None,
    }


def _prices_date() -> str:
    from service.core.datasets.models import PRICES_AS_OF

    return PRICES_AS_OF


def _candidates(
    report: Report,
    spec: ModelSpec,
    plan: _Plan,
    tokens: _Tokens | None,
    histogram: dict[int, int],
    extra: int,
    train_share: float,
    n_epochs: int,
) -> list[dict[str, Any]]:
    result = []
    for cand in MODELS.values():
        entry: dict[str, Any] = {"model": cand.name, "trainable": True, "exact": cand is spec}
        reason = None
        if plan.kind is None:
            reason = "no usable examples"
        elif cand.style == "completion" and plan.kind != PROMPT_COMPLETION:
            reason = f"completion model; data is {plan.kind}"
        elif plan.kind == PREFERENCE and "dpo" not in cand.methods:
            reason = "no preference (DPO) fine-tuning"
        elif plan.kind == REINFORCEMENT and "reinforcement" not in cand.methods:
            reason = "no reinforcement fine-tuning (the local trainer runs it)"
        if reason or tokens is None:
            entry.update(trainable=False, reason=reason, billed_tokens=0, cost_usd=0.0, over_limit_examples=0)
            result.append(entry)
            continue
        ratio = 1.0 if cand.encoding == spec.encoding else tokens.ratio
        exact = cand.encoding == spec.encoding
        own = theirs = 0
        if plan.kind == PROMPT_COMPLETION:
            # histogram rows hold content tokens plus the target format's overhead
            chat = chat_overhead(tokens.counter, plan.system_prompt)
            own = chat if plan.to_chat else 0
            theirs = chat if cand.style == "chat" else extra
            exact = exact and (cand.style == "chat") == plan.to_chat
        billed = over = 0
        for n, k in histogram.items():
            m = round((n - own) * ratio) + theirs
            if m > cand.max_tokens_per_example:
                over += k
            billed += min(cand.max_tokens_per_example, m) * k
        per_epoch = round(billed * train_share)
        entry.update(
            exact=exact,
            billed_tokens=per_epoch * n_epochs,
            cost_usd=training_cost_usd(cand, per_epoch, n_epochs),
            over_limit_examples=over,
        )
        result.append(entry)
    return result


def _renderer(plan: _Plan) -> Callable[[Any], bytes]:
    """How pass 2 turns a kept row's value into its output line; the row was checked in pass 1.

    Prompt/completion lines are assembled from orjson-encoded strings: byte for byte what
    `json.dumps(..., ensure_ascii=False)` writes for the same object (same escapes; no lone
    surrogates reach here), without building the object.
    """
    enc = orjson.dumps
    if plan.kind == PROMPT_COMPLETION:
        if plan.to_chat:
            head = b'{"messages": ['
            if plan.system_prompt:
                head += b'{"role": "system", "content": ' + enc(plan.system_prompt) + b"}, "
            head += b'{"role": "user", "content": '
            middle = b'}, {"role": "assistant", "content": '

            def chat_line(value: Any) -> bytes:
                return b"".join((head, enc(value["prompt"]), middle, enc(value["completion"]), b"}]}\n"))

            return chat_line
        separator, stop, leading_space = plan.separator, plan.stop, plan.leading_space

        def completion_line(value: Any) -> bytes:
            completion = value["completion"]
            if leading_space and completion[:1] != " " and not is_cjk_start(completion):
                completion = " " + completion
            return b"".join(
                (
                    b'{"prompt": ',
                    enc(value["prompt"] + separator),
                    b', "completion": ',
                    enc(completion + stop),
                    b"}\n",
                )
            )

        return completion_line
    if plan.kind == REINFORCEMENT:

        def row_line(value: Any) -> bytes:
            return (json.dumps(value, ensure_ascii=False) + "\n").encode()  # every field: the grader's

        return row_line
    allowed = checks.CHAT_KEYS if plan.kind == CHAT else checks.PREFERENCE_KEYS

    def value_line(value: Any) -> bytes:
        kept = {k: v for k, v in value.items() if k in allowed}  # unknown keys are dropped
        return (json.dumps(kept, ensure_ascii=False) + "\n").encode()

    return value_line


def _write(
    path: Path,
    layout: str,
    encoding: str,
    csv_header: list[str] | None,
    dest: bytearray,
    plan: _Plan,
    out_dir: Path,
    report: Report,
) -> None:
    """Pass 2: re-read the file and write each kept row, fixed, to its split; dropped rows are not
    parsed again and kept ones are not checked again."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [SPLIT_TRAIN]
    if report.counts["validation"]:
        names.append(SPLIT_VALIDATION)
    if report.counts["test"]:
        names.append(SPLIT_TEST)
    files = {b: (out_dir / f"{SPLIT_NAMES[b]}.jsonl").open("wb") for b in names}
    writers = {b: f.write for b, f in files.items()}
    render = _renderer(plan)
    try:
        if layout == "jsonl" and encoding in ("utf-8", "utf-8-sig"):
            with path.open("rb") as src:
                for i, raw in enumerate(reader.read_lines(src)):
                    bucket = dest[i]
                    if bucket == SPLIT_DROP:
                        continue
                    assert isinstance(raw, bytes)  # an over-long line is never kept
                    if i == 0 and raw.startswith(codecs.BOM_UTF8):
                        raw = raw[3:]
                    writers[bucket](render(reader.decode_line(raw)))
        else:
            i = -1
            for rec in _records(path, layout, encoding, None):
                if (
                    csv_header is not None
                    and rec.line == 1
                    and rec.value is not None
                    and "__csv_header__" in rec.value
                ):
                    continue
                i += 1
                bucket = dest[i]
                if bucket == SPLIT_DROP:
                    continue
                value = rec.value
                if csv_header is not None and isinstance(value, dict):
                    value = _csv_value(csv_header, value)
                writers[bucket](render(value))
    finally:
        for f in files.values():
            f.close()
    report.outputs = {SPLIT_NAMES[b]: out_dir / f"{SPLIT_NAMES[b]}.jsonl" for b in names}
