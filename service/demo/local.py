"""The local-trainer demo of ``make run``: build a tiny base model, train it through the API, ask it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from openai import OpenAI

from service.demo.run import SAMPLE, _wait_ready, follow_job

MODEL_DIR = Path("var/models/demo")


def build_demo_model(out: Path = MODEL_DIR) -> Path:
    """``tuneline models build-demo --out DIR`` (in a child: this process never imports torch)."""
    if not (out / "config.json").exists():
        print(f"local demo: building a tiny base model in {out} (no network)")
        tuneline = Path(sys.executable).parent / "tuneline"
        subprocess.run([str(tuneline), "models", "build-demo", "--out", str(out)], check=True)
    return out.resolve()


def run_local_demo(base: str, token: str) -> None:
    """Upload the sample data, train a LoRA on the demo model with provider ``local``, follow it."""
    _wait_ready(base)
    model = build_demo_model()
    client = OpenAI(base_url=base + "/v1", api_key=token, max_retries=2)
    with SAMPLE.open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="fine-tune")
    for _ in range(120):
        if client.files.retrieve(uploaded.id).status != "uploaded":
            break
        time.sleep(0.5)
    job = client.fine_tuning.jobs.create(
        model=str(model),
        training_file=uploaded.id,
        suffix="local-demo",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "checkpoint_every": 10}},
        },  # type: ignore[typeddict-item]
        extra_body={"provider": "local"},
    )
    print(f"local demo: created {job.id} on provider local; following its events")
    job = follow_job(client, job.id, "local demo", 900)
    print(f"local demo: job {job.id} {job.status}; fine-tuned model {job.fine_tuned_model}")
    print(f"local demo: metrics at {base}/v1/fine_tuning/jobs/{job.id}/metrics?format=csv")
