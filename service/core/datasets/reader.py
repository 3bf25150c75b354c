"""Streaming readers: encoding and binary sniffing, then records from JSONL, JSON arrays and CSV."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

SNIFF_BYTES = 64 * 1024
CHUNK_CHARS = 1 << 20
# Limits that keep a pathological line a finding rather than an exception or a memory spike.
# No training example comes near them: 64k tokens is a few hundred KB of text.
MAX_LINE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 128  # JSON nesting; the stdlib parser overflows its recursion limit near 1000
MAX_DIGITS = 4300  # Python refuses to convert longer integers (sys.int_info.default_max_str_digits)

ProgressFn = Callable[[int], None]

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "PNG image"),
    (b"%PDF", "PDF document"),
    (b"PK\x03\x04", "ZIP archive (xlsx, docx, ...)"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"BZh", "bzip2 archive"),
    (b"\xfd7zXZ", "xz archive"),
    (b"SQLite format 3", "SQLite database"),
    (b"PAR1", "Parquet file"),
)
_BINARY_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
# orjson turns integers outside 64 bits into floats; a line with 19 digits in a row goes to the
# exact stdlib parser. Digits are mapped to "0" and searched as one substring: a regex such as
# rb"\d{19}" costs more than the parse itself.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _long_digits(raw: bytes) -> bool:
    return _LONG_DIGITS in raw.translate(_DIGITS_TO_ZERO)


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]|-?\d+')


@dataclass(frozen=True, slots=True)
class Sniff:
    """What the first bytes of a file say about it."""

    encoding: str  # codec name used to read, e.g. "utf-8", "utf-8-sig", "gb18030", "utf-16"
    binary: str | None = None  # a description when the file is binary
    binary_line: int = 1
    bad_line: int = 1  # first line that does not decode as UTF-8 (for non-UTF-8 files)
    empty: bool = False


@dataclass(slots=True)
class Record:
    """One input record: a parsed value, or the reason it could not be parsed."""

    line: int
    value: Any = None
    index: int | None = None  # element index in a JSON array file
    error: str | None = None  # finding code: not_json, binary_content, invalid_encoding, ...
    message: str = ""
    blank: bool = False
    field: str | None = None  # where in the record the error is, when known


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _first_bad_utf8_line(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= len(data) - 4:
            return 0  # cut in the middle of a character by the sniff window
        return _line_of(data, exc.start)
    return 0


def guess_legacy_encoding(data: bytes) -> str:
    """Best guess for non-UTF-8 text: GB18030 (a superset of GBK) for Chinese, else a detector."""
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = ""
    if text and len(_CJK.findall(text)) >= max(1, len(text) // 50):
        return "gb18030"
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None and best.encoding:
        return str(best.encoding)
    return "unknown"


def sniff(path: Path) -> Sniff:
    """Encoding and binary check from the first 64 KiB; UTF-16/32 are known by BOM or NUL pattern."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head:
        return Sniff("utf-8", empty=True)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return Sniff("utf-32")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return Sniff("utf-16")
    sample = head[:4096]
    if len(sample) >= 4 and sample.count(b"\x00") * 3 >= len(sample):
        odd_zero = sample[1::2].count(0) > len(sample) // 4
        even_zero = sample[0::2].count(0) > len(sample) // 4
        if odd_zero != even_zero:
            return Sniff("utf-16-le" if odd_zero else "utf-16-be")
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return Sniff("binary", binary=what, binary_line=1)
    bad = _BINARY_CONTROL.search(head)
    if bad is not None:
        return Sniff("binary", binary="control bytes", binary_line=_line_of(head, bad.start()))
    if head.startswith(codecs.BOM_UTF8):
        return Sniff("utf-8-sig")
    bad_line = _first_bad_utf8_line(head)
    if bad_line:
        return Sniff(guess_legacy_encoding(head), bad_line=bad_line)
    return Sniff("utf-8")


class _Counter(io.RawIOBase):
    """A raw reader over a binary file that reports consumed bytes to a progress callback."""

    def __init__(self, f: BinaryIO, progress: ProgressFn | None) -> None:
        super().__init__()
        self._f = f
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)  # type: ignore[attr-defined]
        if self._progress is not None and n:
            self._progress(n)
        return int(n or 0)


def _text(raw: BinaryIO, progress: ProgressFn | None, encoding: str, newline: str | None) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedReader(_Counter(raw, progress)), encoding=encoding, newline=newline)


def count_lines(path: Path) -> int:
    """Physical lines in a file (a last line without a newline counts)."""
    n = 0
    last = b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def detect_layout(path: Path, sniffed: Sniff) -> str:
    """ "csv", "tsv", "json_array" or "jsonl", from the extension and the first non-blank line."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    with _open_text(path, sniffed.encoding) as f:
        for line in f:
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("["):
                return "jsonl"
            if suffix == ".json":
                return "json_array"
            try:
                json.loads(stripped)
            except ValueError:
                return "json_array"
            return "jsonl"
    return "jsonl"


def _open_text(path: Path, encoding: str) -> io.TextIOWrapper:
    # newline="\n": physical lines are split on LF only, "\r" is stripped by the reader
    return open(path, encoding=encoding, errors="strict", newline="\n")


class Lines:
    """Physical lines of a binary file, read in large chunks and split at LF, without their LF.

    A line over MAX_LINE_BYTES is never held: it is skipped and given as its size (an int).
    `terminated` says whether the line just given ended with LF (only the last one may not).
    """

    READ_BYTES = 1 << 20

    def __init__(self, f: BinaryIO, progress: ProgressFn | None = None) -> None:
        self._f = f
        self._progress = progress
        self.terminated = True

    def __iter__(self) -> Iterator[bytes | int]:
        read, progress = self._f.read, self._progress
        pending: list[bytes] = []  # pieces of a line that spans chunks
        size = 0
        skipping = False
        while chunk := read(self.READ_BYTES):
            if progress is not None:
                progress(len(chunk))
            parts = chunk.split(b"\n")
            tail = parts.pop()  # after the last LF: the start of a line the next chunk ends
            if parts:
                first: bytes | int = parts[0]
                if skipping:
                    first = size + len(parts[0]) + 1
                    skipping = False
                elif pending:
                    pending.append(parts[0])
                    line = b"".join(pending)
                    first = line if len(line) < MAX_LINE_BYTES else len(line) + 1
                pending, size = [], 0
                yield first
                yield from itertools.islice(parts, 1, None)
            if skipping:
                size += len(tail)
            elif tail:
                pending.append(tail)
                size += len(tail)
                if size >= MAX_LINE_BYTES:
                    skipping, pending = True, []
        if skipping:
            yield size
        elif pending:
            self.terminated = False
            yield b"".join(pending)


def read_lines(f: BinaryIO) -> Iterator[bytes | int]:
    """The lines of `Lines`, for a reader that needs no progress and no `terminated`."""
    return iter(Lines(f))


def _too_long(lineno: int, size: int) -> Record:
    return Record(
        lineno,
        error="line_too_long",
        message=f"line is {size} bytes; at most {MAX_LINE_BYTES} bytes per line are read",
    )


def decode_line(raw: bytes) -> Any:
    """The value of a UTF-8 JSONL line already checked by `iter_jsonl` (pass 2 re-reads kept lines)."""
    if not _long_digits(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw.decode("utf-8"))


def iter_jsonl(path: Path, encoding: str, progress: ProgressFn | None = None) -> Iterator[Record]:
    """One record per physical line; blank lines are reported, never parsed."""
    byte_codec = encoding in ("utf-8", "utf-8-sig") or encoding.startswith("gb")
    utf8 = encoding in ("utf-8", "utf-8-sig")
    codec = "utf-8" if utf8 else encoding
    fast = orjson.loads
    if byte_codec:
        # LF is never part of a multi-byte UTF-8 or GB18030 character, so split the bytes.
        with path.open("rb") as f:
            lines = Lines(f, progress)
            for lineno, raw in enumerate(lines, 1):
                if isinstance(raw, int):
                    yield _too_long(lineno, raw)
                    continue
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[3:]
                if b"\x00" in raw:
                    yield Record(lineno, error="binary_content", message="NUL bytes: binary data")
                    continue
                if utf8:
                    # The common case: orjson parses the bytes once (it checks UTF-8 too). Anything
                    # it refuses, or could read differently from the stdlib, takes the exact path.
                    if not raw or raw.isspace():  # ASCII-blank; other blanks go the exact way
                        yield Record(lineno, blank=True)
                        continue
                    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH and not _long_digits(raw):
                        try:
                            yield Record(lineno, fast(raw))
                            continue
                        except orjson.JSONDecodeError:
                            pass
                if lines.terminated:
                    raw += b"\n"  # the stdlib's messages give columns as they were with the LF
                try:
                    text = raw.decode(codec)
                except UnicodeDecodeError:
                    guess = guess_legacy_encoding(raw)
                    yield Record(
                        lineno,
                        error="invalid_encoding",
                        message=f"line is not valid {encoding}; it looks {guess}",
                    )
                    continue
                yield parse_text(lineno, text)
        return
    with _open_text(path, encoding) as tf:
        for lineno, text in enumerate(tf, 1):
            if progress is not None:
                progress(len(text.encode("utf-8", "surrogatepass")))
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield parse_text(lineno, text)


def parse_text(lineno: int, text: str) -> Record:
    """One line by the stdlib parser, with its messages; pathological values become findings."""
    if not text.strip():
        return Record(lineno, blank=True)
    if text.count("[") + text.count("{") > MAX_DEPTH:
        code, where = locate(text)
        if code == "too_deep":
            return Record(
                lineno, error=code, field=where, message=f"JSON nested deeper than {MAX_DEPTH} levels"
            )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Record(lineno, error="not_json", message=f"not valid JSON: {exc.msg} at column {exc.pos + 1}")
    except RecursionError:
        return Record(lineno, error="too_deep", message=f"JSON nested deeper than {MAX_DEPTH} levels")
    except ValueError as exc:
        if "digits" in str(exc):
            return Record(
                lineno,
                error="invalid_number",
                field=locate(text)[1],
                message=f"a number with more than {MAX_DIGITS} digits",
            )
        return Record(lineno, error="not_json", message=f"not valid JSON: {exc}")
    problem = value_problem(value)
    if problem is not None:
        code, where, message = problem
        return Record(lineno, error=code, field=where, message=message)
    return Record(lineno, value)


def locate(text: str) -> tuple[str | None, str | None]:
    """Which top-level key holds JSON nested too deep or a number too long (for text no parser takes)."""
    depth = 0
    key: str | None = None
    last = ""
    for m in _JSON_TOKEN.finditer(text):
        token = m.group()
        first = token[0]
        if first in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return "too_deep", key
        elif first in "]}":
            depth -= 1
        elif first == '"':
            last = token
        elif first == ":":
            if depth == 1:
                key = last[1:-1] or None
        elif len(token.lstrip("-")) > MAX_DIGITS:
            return "invalid_number", key
    return None, None


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _unicode_ok(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def value_problem(value: Any) -> tuple[str, str | None, str] | None:
    """The first value no strict JSON reader (OpenAI's included) would take: NaN/Infinity, a lone
    surrogate, nesting over MAX_DEPTH; with its field path. Walked without recursion."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        v, where, depth = stack.pop()
        if isinstance(v, str):
            if not _unicode_ok(v):
                return (
                    "invalid_unicode",
                    where or None,
                    "a lone surrogate (\\ud800-\\udfff escape without its pair) is not valid Unicode text",
                )
        elif isinstance(v, float):
            if not math.isfinite(v):
                return (
                    "invalid_number",
                    where or None,
                    "NaN, Infinity and numbers beyond a double (1e400) are not JSON",
                )
        elif isinstance(v, dict | list):
            if depth >= MAX_DEPTH:
                return "too_deep", where or None, f"JSON nested deeper than {MAX_DEPTH} levels"
            if isinstance(v, dict):
                for k in v:
                    if not _unicode_ok(k):
                        return (
                            "invalid_unicode",
                            where or None,
                            "a key holds a lone surrogate (\\ud800-\\udfff escape without its pair)",
                        )
                items = [(_path(where, k), x) for k, x in v.items()]
            else:
                items = [(_path(where, i), x) for i, x in enumerate(v)]
            stack.extend((x, p, depth + 1) for p, x in reversed(items))
    return None


def iter_json_array(path: Path, encoding: str, progress: ProgressFn | None = None) -> Iterator[Record]:
    """Elements of a top-level JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    skip_ws = re.compile(r"[\s,]*")
    with path.open("rb") as raw:
        stream = _text(raw, progress, encoding, None)
        buf = stream.read(CHUNK_CHARS).lstrip("\ufeff")
        opening = re.compile(r"\s*\[").match(buf)
        if opening is None:
            yield Record(1, error="not_json", message="expected a JSON array")
            return
        line = 1 + buf.count("\n", 0, opening.end())
        pos = opening.end()
        index = 0
        while True:
            gap = skip_ws.match(buf, pos)
            assert gap is not None
            line += buf.count("\n", pos, gap.end())
            pos = gap.end()
            if pos < len(buf) and buf[pos] == "]":
                return
            end = -1
            if pos < len(buf):
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except ValueError:
                    end = -1
                except RecursionError:
                    # the element's end is unknown, so nothing after it can be read
                    yield Record(
                        line,
                        index=index,
                        error="too_deep",
                        field=locate(buf[pos : pos + MAX_LINE_BYTES])[1],
                        message=f"JSON nested deeper than {MAX_DEPTH} levels; the array is not read further",
                    )
                    return
            if end < 0 or end == len(buf):
                more = stream.read(CHUNK_CHARS) if len(buf) - pos <= MAX_LINE_BYTES else ""
                if more:
                    # an element cut by the buffer edge: read on and decode it again
                    buf = buf[pos:] + more
                    pos = 0
                    continue
                if end < 0:
                    msg = "JSON array is not closed" if pos >= len(buf) else "not valid JSON"
                    yield Record(line, index=index, error="not_json", message=msg)
                    return
            problem = value_problem(value)
            if problem is None:
                yield Record(line, value, index=index)
            else:
                yield Record(line, index=index, error=problem[0], field=problem[1], message=problem[2])
            line += buf.count("\n", pos, end)
            pos = end
            index += 1
            if pos > CHUNK_CHARS:
                buf = buf[pos:]
                pos = 0


def iter_csv(
    path: Path, encoding: str, delimiter: str | None, progress: ProgressFn | None = None
) -> Iterator[Record]:
    """CSV/TSV rows as dicts keyed by header; a record's line is its first physical line."""
    with path.open("rb") as raw:
        text = _text(raw, progress, encoding, "")
        first = text.readline()
        if first.startswith("\ufeff"):
            first = first[1:]
        if delimiter is None:
            delimiter = "\t" if first.count("\t") > first.count(",") else ","
        header = next(csv.reader([first], delimiter=delimiter), [])
        header = [h.strip() for h in header]
        yield Record(1, {"__csv_header__": header})
        reader = csv.reader(text, delimiter=delimiter)
        last = 1
        try:
            for row in reader:
                start = last + 1
                last = reader.line_num + 1
                if not row or all(not c.strip() for c in row):
                    yield Record(start, blank=True)
                    continue
                if len(row) != len(header):
                    yield Record(
                        start,
                        error="csv_columns",
                        message=f"expected {len(header)} columns, found {len(row)}",
                    )
                    continue
                yield Record(start, dict(zip(header, row, strict=True)))
        except csv.Error as exc:
            yield Record(last + 1, error="not_csv", message=f"CSV error: {exc}")
