"""Exports and streamed completions of a locally trained model, through the API and real workers:
each export loads in a reader Tuneline did not write and answers as Tuneline's own completion."""

from __future__ import annotations

import json
import tarfile
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from openai import OpenAI

from service.cli.main import main as cli
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Stack, make_local_stack
from tests.integration.test_local_jobs import chat_rows, create_local, get_json, upload, wait_terminal
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow

MAX_TOKENS = 12


def sdk(stack: Stack, token: str) -> OpenAI:
    # A completion may wait for the infer worker to load the model (or finish an export build).
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=0, timeout=150)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, secret_key: str, local_base_model: Path) -> Any:
    """The local-trainer stack with /metrics on (time to first token)."""
    s = make_local_stack(
        tmp_path_factory.mktemp("local"), secret_key, local_base_model.parent, TUNELINE_METRICS_ENABLED="1"
    )
    yield s
    s.stop()
    s.redis.stop()


@pytest.fixture(scope="module")
def trained(local: Stack, local_base_model: Path) -> tuple[str, Any]:
    token = local.key()
    client = sdk(local, token)
    file_id = upload(client, chat_rows(40))
    job = client.fine_tuning.jobs.create(
        model=str(local_base_model),
        training_file=file_id,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {  # type: ignore[typeddict-unknown-key]
                    "n_epochs": 1,
                    "batch_size": 4,
                    "checkpoint_every": 5,
                    "learning_rate": 0.005,
                }
            },
        },
        # A few held-out rows: the final model's card carries its evaluation.
        extra_body={"provider": "local", "prepare": {"split": {"test": 0.1, "seed": 3}}},
    )
    done = wait_terminal(client, job.id)
    assert done.status == "succeeded", (done.error, local.logs())
    return token, done


@pytest.fixture(scope="module")
def prompts() -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in (SAMPLE_DATA / "funds_chat.jsonl").read_text("utf-8").splitlines()]
    return [[m for m in row["messages"] if m["role"] != "assistant"][:2] for row in rows[50:55]]


def served(client: OpenAI, model: str, prompts: list[list[dict[str, str]]]) -> list[str]:
    return [
        client.chat.completions.create(
            model=model,
            messages=p,
            temperature=0,
            max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
        )
        .choices[0]
        .message.content
        or ""
        for p in prompts
    ]


def content_url(stack: Stack, model: str, fmt: str, quantization: str | None = None) -> str:
    query = f"format={fmt}" + (f"&quantization={quantization}" if quantization else "")
    return f"{stack.base_url}/v1/models/{model}/content?{query}"


def download(
    stack: Stack, token: str, model: str, fmt: str, out: Path, quantization: str | None = None
) -> Path:
    """Ask until the export is built (202 while building), then stream it to ``out``."""
    url = content_url(stack, model, fmt, quantization)
    headers = {"Authorization": f"Bearer {token}"}

    def built() -> httpx2.Response | None:
        r = httpx2.get(url, headers=headers, timeout=30)
        if r.status_code == 202:
            body = r.json()
            assert body["object"] == "model.export" and body["status"] == "building", body
            assert int(r.headers["retry-after"]) > 0
            return None
        assert r.status_code == 200, r.text
        return r

    first = built()
    if first is None:
        wait_until(built, 180, interval=0.5, what=f"{fmt} export of {model}")
    with httpx2.stream("GET", url, headers=headers, timeout=60) as r:
        assert r.status_code == 200
        name = r.headers["content-disposition"].split("filename=")[-1].strip('"')
        path = out / name
        with path.open("wb") as handle:
            for chunk in r.iter_bytes():
                handle.write(chunk)
        assert path.stat().st_size == int(r.headers["content-length"])
    return path


def untar(path: Path) -> Path:
    with tarfile.open(path) as tar:
        tar.extractall(path.parent, filter="data")
        top = {m.name.split("/")[0] for m in tar.getmembers()}
    assert len(top) == 1
    return path.parent / top.pop()


def greedy(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]]) -> list[str]:
    import torch

    answers = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )["input_ids"]
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_TOKENS, do_sample=False
            )
        answers.append(tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True))
    return answers


def adapter_answers(base_model: Path, adapter: Path, prompts: list[list[dict[str, str]]]) -> list[str]:
    """An exported adapter on its base, with nothing but peft and transformers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model)
    model = PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()
    return greedy(model, AutoTokenizer.from_pretrained(adapter), prompts)


def test_exports_load_in_other_readers_and_answer_as_served(
    local: Stack,
    local_base_model: Path,
    trained: tuple[str, Any],
    prompts: list[list[dict[str, str]]],
    tmp_path: Path,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    token, job = trained
    model = job.fine_tuned_model
    ours = served(sdk(local, token), model, prompts)

    # Two requests at once start one build.
    url = content_url(local, model, "merged")
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: codes.append(
                httpx2.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [202, 202, 202]

    merged = untar(download(local, token, model, "merged", tmp_path))
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= {
        p.name for p in merged.iterdir()
    }
    card = (merged / "README.md").read_text("utf-8")
    evaluation = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/evaluation")
    assert evaluation["status"] == "completed" and "## Evaluation" in card, card
    assert f'"char_f1": {evaluation["metrics"]["char_f1"]}' in card
    reader = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert greedy(reader, AutoTokenizer.from_pretrained(merged), prompts) == ours

    adapter = untar(download(local, token, model, "adapter", tmp_path))
    assert adapter_answers(local_base_model, adapter, prompts) == ours

    folder = untar(download(local, token, model, "gguf", tmp_path, "f16"))
    (gguf,) = folder.glob("*.gguf")
    modelfile = (folder / "Modelfile").read_text("utf-8")  # Ollama's, naming the file beside it
    assert modelfile.startswith(f"FROM ./{gguf.name}\n") and "PARAMETER stop" in modelfile
    assert "## Evaluation" in (folder / "README.md").read_text("utf-8")
    reader = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    answers = greedy(reader, AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), prompts)
    # f16 rounding may flip a near tie of the tiny model (tests/training/test_export.py bounds it).
    assert sum(a == b for a, b in zip(answers, ours, strict=True)) >= len(prompts) - 1, (answers, ours)

    events = [e.message for e in sdk(local, token).fine_tuning.jobs.list_events(job.id, limit=100).data]
    ready = [m for m in events if m.startswith(f"Export of {model} as final-merged is ready")]
    assert len(ready) == 1, events  # built once for the three concurrent requests and the downloads


def test_checkpoint_export_and_refusals(
    local: Stack,
    local_base_model: Path,
    trained: tuple[str, Any],
    prompts: list[list[dict[str, str]]],
    tmp_path: Path,
) -> None:
    token, job = trained
    model = job.fine_tuned_model
    client = sdk(local, token)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints
    name = checkpoints[-1].fine_tuned_model_checkpoint
    assert name == f"{model}:ckpt-step-{checkpoints[-1].step_number}"
    folder = untar(download(local, token, name, "adapter", tmp_path))
    assert "adapter_config.json" in {p.name for p in folder.iterdir()}
    card = (folder / "README.md").read_text("utf-8")
    # The checkpoint is a model of its own for completions too, as on OpenAI; its exported adapter
    # on the base answers as it does.
    assert adapter_answers(local_base_model, folder, prompts) == served(client, name, prompts)
    assert f"step {checkpoints[-1].step_number}" in card.lower() or str(checkpoints[-1].step_number) in card

    auth = {"Authorization": f"Bearer {token}"}
    other = {"Authorization": f"Bearer {local.key()}"}
    r = httpx2.get(content_url(local, model, "merged"), headers=other, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx2.get(content_url(local, f"{model}:ckpt-step-99999", "adapter"), headers=auth, timeout=30)
    assert r.status_code == 404
    r = httpx2.get(content_url(local, model, "onnx"), headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "format"
    r = httpx2.get(content_url(local, model, "merged", "q8_0"), headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "quantization"


def test_deleting_the_model_deletes_its_exports(local: Stack, local_base_model: Path, tmp_path: Path) -> None:
    token = local.key()
    client = sdk(local, token)
    job = create_local(client, upload(client, chat_rows(16)), local_base_model, n_epochs=1, batch_size=4)
    done = wait_terminal(client, job.id)
    assert done.status == "succeeded", (done.error, local.logs())
    download(local, token, done.fine_tuned_model, "adapter", tmp_path)
    exports = Path(local.env["TUNELINE_DATA_DIR"]) / "exports" / job.id
    assert any(exports.iterdir())
    client.models.delete(done.fine_tuned_model)
    assert not exports.exists()
    r = httpx2.get(
        content_url(local, done.fine_tuned_model, "adapter"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 404


def test_streamed_completion_arrives_in_pieces_that_join_to_the_answer(
    local: Stack, trained: tuple[str, Any], prompts: list[list[dict[str, str]]]
) -> None:
    token, job = trained
    client = sdk(local, token)
    for messages in prompts[:3]:
        whole = client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=24,
        )
        pieces: list[str] = []
        finish, usage = None, None
        for chunk in client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        ):
            usage = chunk.usage or usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
        assert len(pieces) > 1, pieces
        assert "".join(pieces) == whole.choices[0].message.content
        assert finish == whole.choices[0].finish_reason
        assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]

    text = client.completions.create(model=job.fine_tuned_model, prompt="基金", temperature=0, max_tokens=16)
    streamed = client.completions.create(
        model=job.fine_tuned_model, prompt="基金", temperature=0, max_tokens=16, stream=True
    )
    parts = [c.choices[0].text for c in streamed if c.choices]
    assert "".join(parts) == text.choices[0].text and len([p for p in parts if p]) > 1

    ops = {"Authorization": f"Bearer {local.key(role='ops')}"}

    def observed() -> bool:  # each gunicorn worker counts its own requests; ask until one has
        text = httpx2.get(local.base_url + "/metrics", headers=ops, timeout=30).text
        return 'tuneline_completion_time_to_first_token_seconds_count{provider="local"}' in text

    wait_until(observed, 30, interval=0.2, what="the time-to-first-token histogram")


def test_cli_export_polls_then_downloads(local: Stack, trained: tuple[str, Any], tmp_path: Path) -> None:
    token, job = trained
    result = CliRunner().invoke(
        cli,
        [
            "models",
            "export",
            job.fine_tuned_model,
            "--format",
            "gguf",
            "--quantization",
            "q8_0",
            "--out",
            str(tmp_path),
            "--unpack",
            "--json",
        ],
        env={"TUNELINE_BASE_URL": local.base_url, "TUNELINE_API_KEY": token},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    folder = Path(summary["path"])
    assert folder.parent == tmp_path and folder.is_dir() and summary["bytes"] > 0
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # the archive is gone
    (gguf,) = folder.glob("*-q8_0.gguf")
    assert gguf.read_bytes()[:4] == b"GGUF"
    assert (folder / "Modelfile").read_text("utf-8").startswith(f"FROM ./{gguf.name}\n")
    assert (folder / "README.md").is_file()
