"""Loss masks: assistant turns only for chat, completion only for prompt/completion; over-long
and malformed lines are errors naming the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.training import TORCH_MISSING

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.training.data import IGNORE_INDEX, encode_chat, encode_prompt_completion, load_examples
from service.training.errors import EXAMPLE_TOO_LONG, INVALID_TRAINING_FILE, TrainingError

CHAT = [
    {"role": "system", "content": "你是一位耐心的理财答疑助手。"},
    {"role": "user", "content": "消费现在还能买吗"},
    {"role": "assistant", "content": "消费目前估值处于历史中等的位置,可以小仓位试探。"},
    {"role": "user", "content": "那黄金呢?"},
    {"role": "assistant", "content": "黄金可以适当止盈一部分。供参考。"},
]


def trained_runs(tokenizer: Any, labels: list[int]) -> list[str]:
    """The decoded text of each contiguous run of trained positions."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def test_tiny_chat_mask_matches_the_templates_generation_mask(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded = encode_chat(tokenizer, CHAT)
    reference = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    assert encoded.input_ids == list(reference["input_ids"])
    ours = [int(label != IGNORE_INDEX) for label in encoded.labels]
    assert ours == list(reference["assistant_masks"])
    assert trained_runs(tokenizer, encoded.labels) == [
        CHAT[2]["content"] + "<|im_end|>",
        CHAT[4]["content"] + "<|im_end|>",
    ]


def test_smollm2_chat_mask_is_assistant_turns_only(smollm2_tokenizer: Any) -> None:
    tokenizer = smollm2_tokenizer
    # SmolLM2's template has no {% generation %} markers: the template's own mask is empty.
    reference = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    assert 1 not in reference["assistant_masks"]
    encoded = encode_chat(tokenizer, CHAT)
    assert encoded.input_ids == list(reference["input_ids"])
    assert trained_runs(tokenizer, encoded.labels) == [
        CHAT[2]["content"] + "<|im_end|>",
        CHAT[4]["content"] + "<|im_end|>",
    ]
    # Without a system message SmolLM2 inserts its default one, which is never trained.
    no_system = CHAT[1:3]
    encoded = encode_chat(tokenizer, no_system)
    assert "SmolLM" in tokenizer.decode(encoded.input_ids)
    assert trained_runs(tokenizer, encoded.labels) == [CHAT[2]["content"] + "<|im_end|>"]


def test_assistant_weight_zero_is_not_trained(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded = encode_chat(tokenizer, CHAT, trained=[False, False, False, False, True])
    assert trained_runs(tokenizer, encoded.labels) == [CHAT[4]["content"] + "<|im_end|>"]


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_prompt_completion_trains_the_completion_and_eos_only(
    which: str, tiny_model: Path, request: pytest.FixtureRequest
) -> None:
    from transformers import AutoTokenizer

    tokenizer = (
        AutoTokenizer.from_pretrained(tiny_model)
        if which == "tiny"
        else request.getfixturevalue("smollm2_tokenizer")
    )
    prompt, completion = "手里的军工基金亏了49%,要不要割肉?", "亏了49%不一定要割肉,先看看基本面。"
    encoded = encode_prompt_completion(tokenizer, prompt, completion)
    assert tokenizer.decode(encoded.input_ids) == prompt + completion + tokenizer.eos_token
    assert trained_runs(tokenizer, encoded.labels) == [completion + tokenizer.eos_token]


def _write(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_over_long_example_names_its_line(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    short = {"prompt": "基金", "completion": "供参考。"}
    path = _write(tmp_path / "t.jsonl", [short, short, {"prompt": "基金" * 300, "completion": "供参考。"}])
    with pytest.raises(TrainingError) as caught:
        load_examples(path, tokenizer, max_length=128)
    assert caught.value.code == EXAMPLE_TOO_LONG
    assert "line 3 " in caught.value.message and "128" in caught.value.message
    assert len(load_examples(path, tokenizer, max_length=2000)) == 3


def test_malformed_lines_name_their_line(tiny_model: Path, tmp_path: Path, sample_data: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    bad = sample_data / "bad" / "not_json_line.jsonl"
    first_bad = next(
        n for n, line in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if not _is_json(line)
    )
    with pytest.raises(TrainingError) as caught:
        load_examples(bad, tokenizer, max_length=512)
    assert caught.value.code == INVALID_TRAINING_FILE
    assert f"line {first_bad} " in caught.value.message
    path = _write(tmp_path / "fields.jsonl", [{"prompt": "a", "completion": "b"}, {"text": "no"}])
    with pytest.raises(TrainingError, match="line 2 "):
        load_examples(path, tokenizer, max_length=512)


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _pair(messages: Any = None, preferred: Any = "好的。", rejected: Any = "不好。") -> dict[str, Any]:
    def output(content: Any) -> Any:
        return [{"role": "assistant", "content": content}] if isinstance(content, str) else content

    return {
        "input": {
            "messages": messages if messages is not None else [{"role": "user", "content": "消费能买吗"}]
        },
        "preferred_output": output(preferred),
        "non_preferred_output": output(rejected),
    }


def test_preference_pair_is_prompt_plus_each_reply(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from service.training.data import encode_preference

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pair = encode_preference(tokenizer, _pair(preferred="消费可以小仓位试探。", rejected="黄金可以止盈。"))
    assert (
        tokenizer.decode(pair.prompt_ids) == "<|im_start|>user\n消费能买吗<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(pair.chosen_ids) == "消费可以小仓位试探。<|im_end|>"
    assert tokenizer.decode(pair.rejected_ids) == "黄金可以止盈。<|im_end|>"
    # What the trainer runs is what the template renders for the whole conversation.
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "消费能买吗"}, {"role": "assistant", "content": "消费可以小仓位试探。"}],
        tokenize=False,
    )
    assert full.rstrip() == tokenizer.decode(pair.prompt_ids + pair.chosen_ids)
    assert pair.longest == len(pair.prompt_ids) + len(pair.rejected_ids)  # the longer reply


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("[1]", "JSON object"),
        (json.dumps({"preferred_output": []}), "`input` must be an object"),
        (json.dumps(_pair(messages=[])), "non-empty list"),
        (
            json.dumps(
                _pair(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
            ),
            "must not end with an assistant message",
        ),
        (json.dumps(_pair(preferred=None)), "`preferred_output` must be a list of exactly one"),
        (json.dumps(_pair(rejected=[])), "`non_preferred_output` must be a list of exactly one"),
        (json.dumps(_pair(preferred=[{"role": "user", "content": "x"}])), "`preferred_output[0].role`"),
        (json.dumps(_pair(rejected="  ")), "`non_preferred_output[0].content` is empty"),
        (json.dumps(_pair(preferred="同样", rejected="同样")), "identical"),
        ("{not json", "line 3"),
    ],
)
def test_bad_preference_rows_name_their_line(
    tiny_model: Path, tmp_path: Path, row: str, fragment: str
) -> None:
    from transformers import AutoTokenizer

    from service.training.data import load_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    good = json.dumps(_pair(), ensure_ascii=False)
    path = tmp_path / "pairs.jsonl"
    path.write_text(f"{good}\n\n{row}\n{good}\n", encoding="utf-8")
    with pytest.raises(TrainingError) as caught:
        load_pairs(path, tokenizer, 512)
    assert caught.value.code == INVALID_TRAINING_FILE
    assert "line 3 of the training file" in caught.value.message and fragment in caught.value.message


def test_over_long_preference_pair_is_an_error_naming_the_line(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from service.training.data import load_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    path = tmp_path / "pairs.jsonl"
    rows = [_pair(), _pair(rejected="很长的回答" * 300)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert len(load_pairs(path, tokenizer, 4000)) == 2
    with pytest.raises(TrainingError) as caught:
        load_pairs(path, tokenizer, 512, "validation file")
    assert caught.value.code == EXAMPLE_TOO_LONG
    assert "line 2 of the validation file" in caught.value.message and "512" in caught.value.message
