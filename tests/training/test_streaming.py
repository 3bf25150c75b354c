"""Token-by-token generation (``generate_stream``) on the tiny model: the chunks joined are the
non-streamed answer, the first arrives while the model is still generating, early exit stops it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.training import TORCH_MISSING

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.training.errors import TrainingError

CASES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "基金定投怎么选"}], "max_tokens": 24},
    {
        "messages": [
            {"role": "system", "content": "你是理财助手。"},
            {"role": "user", "content": "黄金还能买吗"},
        ],
        "max_tokens": 16,
    },
    {"prompt": "债券基金", "max_tokens": 20},
    {"prompt": "消费现在", "max_tokens": 1},
]


@pytest.mark.parametrize("case", CASES)
def test_stream_chunks_join_to_the_non_streamed_answer(tiny_model: Path, case: dict[str, Any]) -> None:
    from service.training.inference import generate, generate_stream

    text, finish_reason, prompt_tokens, completion_tokens = generate(str(tiny_model), device="cpu", **case)
    stream = generate_stream(str(tiny_model), device="cpu", **case)
    chunks = list(stream)
    assert "".join(chunks) == text
    assert all(chunks)  # no empty chunks
    assert (stream.finish_reason, stream.prompt_tokens, stream.completion_tokens) == (
        finish_reason,
        prompt_tokens,
        completion_tokens,
    )
    assert stream.tokens_generated == completion_tokens
    if text:
        assert stream.time_to_first_token_s is not None and stream.total_s is not None
        assert 0 <= stream.time_to_first_token_s <= stream.total_s


def test_stream_honours_a_stop_string_split_across_chunks(tiny_model: Path) -> None:
    from service.training.inference import generate, generate_stream

    full, _, _, _ = generate(str(tiny_model), prompt="基金", max_tokens=16, device="cpu")
    if len(full) < 4:
        pytest.skip("the untrained model produced too little text to pick a stop string from")
    stop = full[2:4]  # two characters: the stream must hold back a partial match, never send it
    cut, finish_reason, _, _ = generate(
        str(tiny_model), prompt="基金", max_tokens=16, stop=[stop], device="cpu"
    )
    stream = generate_stream(str(tiny_model), prompt="基金", max_tokens=16, stop=[stop], device="cpu")
    chunks = list(stream)
    assert "".join(chunks) == cut == full[: full.index(stop)]
    assert stream.finish_reason == finish_reason == "stop"


def test_first_chunk_arrives_before_generation_ends_and_closing_stops_it(tiny_model: Path) -> None:
    from service.training.inference import STREAM_QUEUE_TOKENS, generate, generate_stream, get_model

    max_tokens = 64
    text, finish_reason, _, completion_tokens = generate(
        str(tiny_model), prompt="基金", max_tokens=max_tokens, device="cpu"
    )
    if completion_tokens < max_tokens:
        pytest.skip(f"the untrained model ended its answer after {completion_tokens} tokens")
    stream = generate_stream(str(tiny_model), prompt="基金", max_tokens=max_tokens, device="cpu")
    chunks = iter(stream)
    first = next(chunks)
    # The hand-off queue is bounded: when the first chunk is read (a few tokens at most), the model
    # cannot have run ahead by more than the queue and the token being handed over, so generation
    # is provably still going on, whatever the machine's speed.
    assert first and text.startswith(first)
    assert max_tokens > STREAM_QUEUE_TOKENS + 8
    assert stream.tokens_generated < max_tokens
    assert stream.finish_reason is None
    stream.close()
    assert stream.tokens_generated < max_tokens  # stopped at the next token, not run to the end
    assert stream.finish_reason is None
    assert not get_model(str(tiny_model), device="cpu").lock.locked()  # the model is free again
    again, _, _, _ = generate(str(tiny_model), prompt="基金", max_tokens=max_tokens, device="cpu")
    assert again == text and finish_reason == "length"


def test_stream_errors_raise_when_the_stream_is_created(tiny_model: Path, tmp_path: Path) -> None:
    from service.training.inference import generate_stream

    with pytest.raises(TrainingError) as caught:
        generate_stream(str(tiny_model), prompt="基金" * 2000, device="cpu")
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(TrainingError) as caught:
        generate_stream(str(tmp_path / "missing"), prompt="x")
    assert caught.value.code == "model_not_found"
    with pytest.raises(ValueError):
        generate_stream(str(tiny_model), device="cpu")
