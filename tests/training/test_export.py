"""Exports of a LoRA run on the tiny llama model, read back by readers Tuneline did not write:
``peft`` for the adapter, plain ``transformers`` for merged safetensors, transformers' GGUF loader
for f16 and q8_0; each gives Tuneline's own greedy answers (service.training.inference)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.training import TORCH_MISSING, run_child, write_spec

pytest.importorskip("torch", reason=TORCH_MISSING)
from service.training.errors import TrainingError
from service.training.export import CardFacts, archive_size, export_model, main, write_archive

# A real LoRA run through the training child process first (about a minute here), like test_run.
pytestmark = pytest.mark.slow

MAX_TOKENS = 24
HYPER = {"max_steps": 30, "batch_size": 8, "learning_rate": 3e-3, "checkpoint_every": 10, "seed": 1}


@dataclass(frozen=True)
class Run:
    """A finished LoRA run: its base, data, output directory and model card facts."""

    base: Path
    train: Path
    output: Path
    spec: Path

    @property
    def model(self) -> Path:
        return self.output / "model"

    def checkpoint(self, step: int) -> Path:
        return self.output / "checkpoints" / f"checkpoint-{step}"


@pytest.fixture(scope="module")
def run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A tiny base pre-trained briefly (so that answers are words, not noise), then 30 LoRA steps
    through the real training child, checkpoints at 10, 20, 30."""
    from service.training.demo import build_demo

    folder = tmp_path_factory.mktemp("export-run")
    base = folder / "base"
    build_demo(base, data_dir / "chat_train.jsonl", pretrain_steps=80)
    spec = write_spec(
        folder / "SPEC.json",
        job_id="ftjob-export",
        base_model=str(base),
        method="lora",
        train_file=str(data_dir / "chat_train.jsonl"),
        output_dir=str(folder / "out"),
        hyperparameters=HYPER,
        device="cpu",
        threads=1,
    )
    child = run_child(spec, folder / "child.log")
    assert child.returncode == 0, child.log
    return Run(base, data_dir / "chat_train.jsonl", folder / "out", spec)


def _prompts(data_dir: Path) -> list[dict[str, Any]]:
    """Five held-out requests: three chats (system + user) and two raw prompts."""
    rows = [json.loads(line) for line in (data_dir / "chat_valid.jsonl").read_text("utf-8").splitlines()]
    chats = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows[:3]]
    raws = [r["messages"][-2]["content"] for r in rows[3:5]]
    return [{"messages": c} for c in chats] + [{"prompt": p} for p in raws]


@pytest.fixture(scope="module")
def prompts(data_dir: Path) -> list[dict[str, Any]]:
    return _prompts(data_dir)


def tuneline_answers(model_dir: Path, prompts: list[dict[str, Any]]) -> list[str]:
    from service.training.inference import generate

    return [generate(str(model_dir), max_tokens=MAX_TOKENS, device="cpu", **p)[0] for p in prompts]


def encode(tokenizer: Any, request: dict[str, Any]) -> Any:
    if "messages" in request:
        return tokenizer.apply_chat_template(
            request["messages"], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )["input_ids"]
    return tokenizer(request["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"]


def reader_generate(model: Any, tokenizer: Any, prompts: list[dict[str, Any]]) -> list[tuple[Any, list[int]]]:
    """Greedy generation with nothing but the reader's own objects and the export's generation
    config: ``(prompt ids, new token ids)`` per request."""
    import torch

    results = []
    for request in prompts:
        ids = encode(tokenizer, request)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS, do_sample=False
            )
        results.append((ids, out[0][ids.shape[1] :].tolist()))
    return results


def reader_answers(model: Any, tokenizer: Any, prompts: list[dict[str, Any]]) -> list[str]:
    return [
        tokenizer.decode(new, skip_special_tokens=True)
        for _, new in reader_generate(model, tokenizer, prompts)
    ]


def worst_greedy_gap(ours: Any, generated: list[tuple[Any, list[int]]]) -> float:
    """Over every token a reader generated: how far below Tuneline's own best logit at that position
    it is (0 when the reader picked Tuneline's greedy token everywhere)."""
    import torch

    worst = 0.0
    for ids, new in generated:
        if not new:
            continue
        full = torch.cat([ids, torch.tensor([new])], dim=1)
        with torch.inference_mode():
            scores = ours.model(full).logits[0, ids.shape[1] - 1 : -1]
        picked = scores[torch.arange(len(new)), torch.tensor(new)]
        worst = max(worst, float((scores.max(dim=-1).values - picked).max()))
    return worst


def logits(model: Any, tokenizer: Any, text: str) -> Any:
    import torch

    with torch.inference_mode():
        return model(tokenizer(text, return_tensors="pt")["input_ids"]).logits[0]


@pytest.fixture(scope="module")
def served(run: Run, prompts: list[dict[str, Any]]) -> list[str]:
    """What Tuneline's inference answers with the final model."""
    answers = tuneline_answers(run.model, prompts)
    assert any(answers) and len(set(answers)) >= 2, answers  # the comparison means something
    return answers


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


def facts(run: Run) -> CardFacts:
    return CardFacts.from_spec(run.spec, evaluation={"metrics": {"exact_match": 0.25}})


def test_adapter_export_loads_with_peft_on_its_base(
    run: Run, exports: Path, prompts: list[dict[str, Any]], served: list[str]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_model(run.model, "adapter", exports / "adapter", facts=facts(run))
    assert set(result.files) >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "README.md",
    }
    assert not {"optimizer.pt", "training_args.bin"} & set(result.files)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run.base), result.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    assert reader_answers(model, tokenizer, prompts) == served

    card = (result.path / "README.md").read_text("utf-8")
    digest = hashlib.sha256(run.train.read_bytes()).hexdigest()
    assert f"Training data sha256: `{digest}`" in card and f"Base model: `{run.base}`" in card
    assert "LoRA (peft)" in card and "`learning_rate`: 0.003" in card and "`max_steps`: 30" in card
    assert '"exact_match": 0.25' in card and "`step`: 30" in card and "final model" in card


def test_merged_export_loads_with_plain_transformers(
    run: Run, exports: Path, prompts: list[dict[str, Any]], served: list[str]
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from service.training.inference import get_model

    result = export_model(run.model, "merged", exports / "merged", facts=facts(run))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(
        result.files
    )
    assert not any(name.startswith("adapter") for name in result.files)  # no peft needed to read it
    model = AutoModelForCausalLM.from_pretrained(result.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    assert GenerationConfig.from_pretrained(result.path).eos_token_id == tokenizer.eos_token_id
    assert reader_answers(model, tokenizer, prompts) == served
    text = served[0] or "基金"
    ours = get_model(str(run.model), device="cpu")
    assert torch.allclose(logits(model, tokenizer, text), logits(ours.model, ours.tokenizer, text), atol=1e-4)


# Tolerances on next-token logits against Tuneline's fp32 model (logits span about ±10 here).
# f16 rounds each weight to 11 significant bits: measured max difference 0.002. q8_0 keeps 8 bits
# per weight with one scale per block of 32: measured 0.06. Leaving out the Q/K permutation
# moves them by 0.38 on this small model, and a wrong tensor mapping by whole units.
GGUF_ATOL = {"f16": 0.02, "q8_0": 0.15}


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_gguf_export_loads_with_transformers_gguf_reader(
    run: Run, exports: Path, prompts: list[dict[str, Any]], served: list[str], gguf_type: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.training.inference import get_model

    result = export_model(
        run.model, "gguf", exports / f"gguf-{gguf_type}", gguf_type=gguf_type, facts=facts(run)
    )
    name = f"model-{gguf_type}.gguf"
    assert set(result.files) == {name, "Modelfile", "README.md"}
    model = AutoModelForCausalLM.from_pretrained(result.path, gguf_file=name).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.path, gguf_file=name)
    ours = get_model(str(run.model), device="cpu")
    for request in prompts:  # the tokenizer rebuilt from GGUF metadata encodes like the original
        assert encode(tokenizer, request).tolist() == encode(ours.tokenizer, request).tolist()
    generated = reader_generate(model, tokenizer, prompts)
    answers = [tokenizer.decode(new, skip_special_tokens=True) for _, new in generated]
    # Rounding weights may flip a near tie, after which an answer goes its own way. So: at least 4
    # of 5 answers identical, and every token the reader picked is Tuneline's greedy token or one
    # whose logit is within twice the logit bound of it (a tie the rounding can flip).
    same = sum(a == b for a, b in zip(answers, served, strict=True))
    assert same >= len(prompts) - 1, (answers, served)
    assert worst_greedy_gap(ours, generated) < 2 * GGUF_ATOL[gguf_type], (answers, served)
    for text in [served[0] or "基金", served[-1] or "债券"]:
        diff = (logits(model, tokenizer, text) - logits(ours.model, ours.tokenizer, text)).abs().max()
        assert float(diff) < GGUF_ATOL[gguf_type]
    assert torch.equal(model.model.embed_tokens.weight, model.lm_head.weight)  # tied, as trained

    modelfile = (result.path / "Modelfile").read_text("utf-8")
    assert modelfile.startswith(f"FROM ./{name}\n")
    assert "TEMPLATE" in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_gguf_metadata_and_types(run: Run, exports: Path) -> None:
    import gguf

    path = exports / "gguf-q8_0" / "model-q8_0.gguf"
    if not path.is_file():
        export_model(run.model, "gguf", exports / "gguf-q8_0", gguf_type="q8_0")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd
    fields = reader.fields

    def text(key: str) -> str:
        field = fields[key]
        return bytes(field.parts[field.data[0]]).decode("utf-8")

    assert text("general.architecture") == "llama" and text("tokenizer.ggml.model") == "gpt2"
    assert text("tokenizer.ggml.pre") == "gpt-2"
    template = text("tokenizer.chat_template")  # transformers-only {% generation %} tags removed
    assert "{% generation %}" not in template and "endgeneration" not in template
    assert "{% if add_generation_prompt %}" in template


def test_export_from_a_checkpoint(
    run: Run, exports: Path, prompts: list[dict[str, Any]], served: list[str]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = run.checkpoint(10)
    adapter = export_model(checkpoint, "adapter", exports / "ckpt-adapter")
    merged = export_model(checkpoint, "merged", exports / "ckpt-merged")
    # Tuneline serves the checkpoint's adapter export like any trained model (its base is recorded).
    at_step_10 = tuneline_answers(adapter.path, prompts)
    model = AutoModelForCausalLM.from_pretrained(merged.path).eval()
    assert reader_answers(model, AutoTokenizer.from_pretrained(merged.path), prompts) == at_step_10
    assert json.loads((adapter.path / "tuneline-model.json").read_text("utf-8"))["job_id"] == "ftjob-export"
    card = (merged.path / "README.md").read_text("utf-8")
    assert "checkpoint at step 10" in card and "`step`: 10" in card and "`step`: 30" not in card


def test_archive_is_streamed_and_its_size_known_in_advance(run: Run, exports: Path) -> None:
    folder = export_model(run.model, "adapter", exports / "archived").path

    class WriteOnly:
        """A socket-like sink: no seek, no tell, records each write's size."""

        def __init__(self) -> None:
            self.buffer = io.BytesIO()
            self.writes: list[int] = []

        def write(self, data: bytes) -> int:
            self.writes.append(len(data))
            return self.buffer.write(data)

    sink = WriteOnly()
    written = write_archive(folder, sink)  # type: ignore[arg-type]
    assert written == archive_size(folder) == len(sink.buffer.getvalue())
    assert len(sink.writes) > 1 and max(sink.writes) <= tarfile.RECORDSIZE  # incremental, record by record
    with tarfile.open(fileobj=io.BytesIO(sink.buffer.getvalue())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert members == {f"archived/{p.name}": p.read_bytes() for p in folder.iterdir()}


def test_refusals_name_the_problem(run: Run, exports: Path, tmp_path: Path) -> None:
    from transformers import GPT2Config

    from service.training.gguf_export import check_architecture

    with pytest.raises(TrainingError) as caught:
        export_model(run.base, "adapter", tmp_path / "x")  # full weights: no adapter to export
    assert caught.value.code == "export_unsupported" and "merged" in caught.value.message
    with pytest.raises(TrainingError) as caught:
        check_architecture(GPT2Config(architectures=["GPT2LMHeadModel"]))
    assert caught.value.code == "export_unsupported" and "'gpt2'" in caught.value.message
    with pytest.raises(TrainingError) as caught:
        export_model(run.model, "onnx", tmp_path / "x")
    assert caught.value.code == "export_unsupported" and "onnx" in caught.value.message
    with pytest.raises(TrainingError) as caught:
        export_model(tmp_path / "missing", "merged", tmp_path / "x")
    assert caught.value.code == "model_not_found"
    incomplete = tmp_path / "checkpoint-5"
    incomplete.mkdir()
    with pytest.raises(TrainingError) as caught:
        export_model(incomplete, "adapter", tmp_path / "x")
    assert caught.value.code == "model_not_found" and "incomplete" in caught.value.message
    assert not (tmp_path / "x").exists() and [p.name for p in tmp_path.iterdir()] == ["checkpoint-5"]


def test_module_entry_point(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "adapter.tar"
    code = main(
        ["--model", str(run.model), "--format", "adapter", "--out", str(tmp_path / "a"),
         "--archive", str(archive), "--spec", str(run.spec), "--name", "ft:tiny:acme::ftjob-export"]
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["format"] == "adapter"
    assert summary["archive_bytes"] == archive.stat().st_size == archive_size(tmp_path / "a")
    assert summary["bytes"] == sum(p.stat().st_size for p in (tmp_path / "a").iterdir())
    assert "# ft:tiny:acme::ftjob-export" in (tmp_path / "a" / "README.md").read_text("utf-8")
    assert main(["--model", str(tmp_path / "nope"), "--format", "merged", "--out", str(tmp_path / "b")]) == 1
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error["code"] == "model_not_found"
