"""A score_model grader judged by a real model: a sandbox-trained fine-tune, served over live HTTP."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from openai import OpenAI
from werkzeug.serving import make_server

from service.app import create_app
from service.core.dispatch import RecordingDispatcher
from service.settings import Settings
from tests.api.jobfactory import finished_job
from tests.support.procs import wait_until

TENANT = "judges"
PROMPT = "Grade the answer 七成 against the reference 70%."
TRAIN = json.dumps(
    {"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": '{"result": 0.8}'}]},
    ensure_ascii=False,
)
GRADER = {
    "type": "score_model",
    "name": "judge",
    "input": [
        {
            "role": "user",
            "content": "Grade the answer {{sample.output_text}} against the reference {{item.ref}}.",
        }
    ],
}


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    # The sandbox provider is this same server: its URL must be known before the app is built.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tuned = settings.with_overrides(
        sandbox_time_scale=0.02, sandbox_url=f"http://127.0.0.1:{port}/sandbox/v1"
    )
    server = make_server(
        "127.0.0.1", port, create_app(tuned, dispatcher=RecordingDispatcher()), threaded=True
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)


def test_score_model_asks_the_callers_fine_tuned_model(live, settings, store, make_key):
    # Train the judge in the sandbox, then register it as the tenant's fine-tuned model.
    sandbox = OpenAI(
        base_url=live + "/sandbox/v1", api_key=settings.sandbox_api_key, max_retries=0, timeout=20
    )
    training = sandbox.files.create(file=("judge.jsonl", TRAIN.encode()), purpose="fine-tune")
    job = sandbox.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=training.id)
    done = wait_until(
        lambda: (j := sandbox.fine_tuning.jobs.retrieve(job.id)).status == "succeeded" and j, 20, what="judge"
    )
    own = finished_job(store, TENANT, provider="sandbox", provider_fine_tuned_model=done.fine_tuned_model)
    client = OpenAI(base_url=live + "/v1", api_key=make_key(TENANT), max_retries=0, timeout=30)
    grader = {**GRADER, "model": own["fine_tuned_model"]}

    judged = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="七成", item={"ref": "70%"})
    assert judged.reward == pytest.approx(0.8)
    assert judged.model_grader_token_usage_per_model[own["fine_tuned_model"]] > 0
    assert not judged.metadata.errors.model_grader_parse_error

    # A prompt the judge was not trained on gets the sandbox's canned text: no score in it.
    unreadable = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="三成", item={"ref": "70%"})
    assert unreadable.reward == 0.0 and unreadable.metadata.errors.model_grader_parse_error
