"""``tuneline models build-demo`` and generation on a base model (in-process, the tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.training import TORCH_MISSING, subset

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.cli.main import main
from service.training.errors import TrainingError


def test_build_demo_cli_writes_a_loadable_chat_model(sample_data: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    data = subset(sample_data / "funds_chat.jsonl", tmp_path / "chat.jsonl", 0, 200)
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        main, ["models", "build-demo", "--out", str(out), "--data", str(data), "--pretrain-steps", "3"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model_dir"] == str(out) and summary["pretrain_steps"] == 3
    assert 0 < summary["parameters"] < 1_000_000 and summary["pretrain_loss"] > 0
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "llama" and config.num_hidden_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "基金"}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    assert rendered == "<|im_start|>user\n基金<|im_end|>\n<|im_start|>assistant\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.jsonl", "demo"]  # no temporary left


def test_build_demo_cli_rejects_a_missing_data_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["models", "build-demo", "--out", str(tmp_path / "m"), "--data", "nope"]
    )
    assert result.exit_code == 2 and "nope" in result.output


def test_generate_on_a_base_model_counts_tokens_and_stops(tiny_model: Path) -> None:
    from service.training.inference import generate, get_model

    text, finish_reason, prompt_tokens, completion_tokens = generate(
        str(tiny_model), messages=[{"role": "user", "content": "基金"}], max_tokens=5, device="cpu"
    )
    assert isinstance(text, str)
    assert prompt_tokens > 3 and 1 <= completion_tokens <= 5
    assert finish_reason == ("length" if completion_tokens == 5 else "stop")
    assert get_model(str(tiny_model), device="cpu") is get_model(str(tiny_model), device="cpu")  # cached

    again = generate(
        str(tiny_model), messages=[{"role": "user", "content": "基金"}], max_tokens=5, device="cpu"
    )
    assert again == (text, finish_reason, prompt_tokens, completion_tokens)  # greedy at temperature 0

    raw, _, raw_prompt_tokens, _ = generate(str(tiny_model), prompt="基金", max_tokens=3, device="cpu")
    assert raw_prompt_tokens < prompt_tokens and isinstance(raw, str)


def test_generate_cuts_at_a_stop_string(tiny_model: Path) -> None:
    from service.training.inference import generate

    text, _, _, _ = generate(str(tiny_model), prompt="基金", max_tokens=12, device="cpu")
    if len(text) < 2:
        pytest.skip("the untrained model produced too little text to pick a stop string from")
    stop = text[1:2]
    cut, finish_reason, _, _ = generate(
        str(tiny_model), prompt="基金", max_tokens=12, stop=[stop], device="cpu"
    )
    assert cut == text[: text.index(stop)] and finish_reason == "stop"


def test_generate_errors(tiny_model: Path, tmp_path: Path) -> None:
    from service.training.inference import generate

    with pytest.raises(TrainingError) as caught:
        generate(str(tmp_path / "missing"), prompt="x")
    assert caught.value.code == "model_not_found"
    with pytest.raises(TrainingError) as caught:
        generate(str(tiny_model), prompt="基金" * 2000, device="cpu")
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(ValueError):
        generate(str(tiny_model), device="cpu")
