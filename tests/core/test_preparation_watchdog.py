"""The preparation watchdog: a file whose preparation task was lost, or whose worker keeps dying,
still ends (``processed``, or ``error`` with a final report answer), never ``uploaded`` for good.

Real Redis, the real upload route (Flask test client), the use cases the worker tasks run; the
"worker death" is an exception no ``except Exception`` catches, raised inside the engine.
"""

from __future__ import annotations

import io
import time

import pytest

from service.core import preparation, tasknames
from service.core.dispatch import RecordingDispatcher
from service.core.store import imports as imports_repo
from service.core.store import keys
from service.core.store import preparing as watchdog
from tests.conftest import SAMPLE_DATA


class WorkerDied(BaseException):
    """The worker process died here: nothing after this point of the task ran."""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(client, token: str) -> str:  # type: ignore[no-untyped-def]
    data = (SAMPLE_DATA / "funds_qa.jsonl").read_bytes()
    r = client.post(
        "/v1/files",
        headers=auth(token),
        content_type="multipart/form-data",
        data={"purpose": "fine-tune", "file": (io.BytesIO(data), "train.jsonl")},
    )
    assert r.status_code == 200, r.json
    return str(r.json["id"])


def status(client, token: str, file_id: str) -> str:  # type: ignore[no-untyped-def]
    return str(client.get(f"/v1/files/{file_id}", headers=auth(token)).json["status"])


def test_a_lost_preparation_task_is_sent_again_and_the_file_ends(
    client, make_key, store, settings, dispatcher
):
    token = make_key()
    file_id = upload(client, token)
    assert dispatcher.sent[-1] == (tasknames.PREPARE_FILE, (file_id,))
    dispatcher.sent.clear()  # the message is lost (a broker hiccup, a process killed before it went)
    assert preparation.requeue_stalled(store, dispatcher, time.time()) == []  # not due yet
    later = time.time() + watchdog.WATCHDOG_S + 1
    assert preparation.requeue_stalled(store, dispatcher, later) == [file_id]
    assert dispatcher.sent == [(tasknames.PREPARE_FILE, (file_id,))]
    assert preparation.requeue_stalled(store, dispatcher, later) == []  # claimed: sent once
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)  # what the worker runs
    assert status(client, token, file_id) == "processed"
    assert client.get(f"/v1/files/{file_id}/report", headers=auth(token)).status_code == 200
    assert store.r.zscore(keys.files_preparing(), file_id) is None  # no longer watched
    assert not store.r.exists(keys.file_prepare_attempts(file_id))


def test_a_file_whose_worker_keeps_dying_ends_error_with_a_final_answer(
    client, make_key, store, settings, monkeypatch
):
    token = make_key()
    file_id = upload(client, token)

    def dies(*args, **kwargs):
        raise WorkerDied

    monkeypatch.setattr(preparation, "prepare_file", dies)
    for _ in range(preparation.MAX_PREPARE_STARTS):  # each redelivery dies the same way
        with pytest.raises(WorkerDied):
            preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
        assert status(client, token, file_id) == "uploaded"
        assert client.get(f"/v1/files/{file_id}/report", headers=auth(token)).status_code == 409
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)  # the next start gives up
    assert status(client, token, file_id) == "error"
    report = client.get(f"/v1/files/{file_id}/report", headers=auth(token))
    assert report.status_code == 422, report.json
    message = report.json["error"]["message"]
    assert f"interrupted {preparation.MAX_PREPARE_STARTS} times" in message, message
    assert store.r.zscore(keys.files_preparing(), file_id) is None


def test_a_late_duplicate_leaves_a_prepared_file_as_it_is(client, make_key, store, settings, monkeypatch):
    token = make_key()
    file_id = upload(client, token)
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    report = store.r.get(keys.file_report(file_id))

    def must_not_run(*args, **kwargs):
        raise AssertionError("a prepared file was prepared again")

    monkeypatch.setattr(preparation, "prepare_file", must_not_run)
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    assert status(client, token, file_id) == "processed" and store.r.get(keys.file_report(file_id)) == report


def test_a_running_preparation_keeps_its_file_from_the_watchdog(store, settings, monkeypatch):
    """The engine's progress pushes the entry ahead (every ``HEARTBEAT_S``), so a long preparation
    is not sent a second time while it runs."""
    monkeypatch.setattr(preparation, "HEARTBEAT_S", 0.0)
    pipe = store.r.pipeline(transaction=True)
    watchdog.queue(pipe, "file-x", time.time() - 2 * watchdog.WATCHDOG_S)  # long overdue
    pipe.execute()
    preparation._Heartbeat(store, "file-x")(1024)
    assert preparation.requeue_stalled(store, RecordingDispatcher(), time.time()) == []


def test_an_imported_file_is_watched_from_its_record_on(store):
    """Imports and distillations write their ``uploaded`` records through one function: the
    watchdog entry goes in the same MULTI."""
    record = {"id": "file-imported", "tenant": "acme", "status": "uploaded"}
    pipe = store.r.pipeline(transaction=True)
    imports_repo.queue_file_record(pipe, record, time.time() * 1000)
    pipe.execute()
    due = store.r.zscore(keys.files_preparing(), "file-imported")
    assert due is not None and due == pytest.approx(time.time() + watchdog.WATCHDOG_S, abs=5)
