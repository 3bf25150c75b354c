"""Models and completions routes over the Flask test client: ownership, deletion, bad input."""

from __future__ import annotations

from tests.api.jobfactory import finished_job
from tests.api.test_files import assert_error, auth


def chat(client, token, model, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "你好"}], **extra}
    return client.post("/v1/chat/completions", headers=auth(token), json=body)


def test_models_list_get_only_own_tenant(client, make_key, store):
    mine, other = make_key("alpha"), make_key("beta")
    job = finished_job(store, "alpha")
    finished_job(store, "beta")
    running = finished_job(store, "alpha", status="running", stage="training", fine_tuned_model=None)
    listing = client.get("/v1/models", headers=auth(mine)).json
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == [job["fine_tuned_model"]]
    model = listing["data"][0]
    assert model["object"] == "model" and model["owned_by"] == "alpha"
    assert model["fine_tuning_job_id"] == job["id"] and model["provider"] == "sandbox"
    assert running["id"] not in str(listing)
    got = client.get(f"/v1/models/{job['fine_tuned_model']}", headers=auth(mine))
    assert got.status_code == 200 and got.json == model
    assert_error(
        client.get(f"/v1/models/{job['fine_tuned_model']}", headers=auth(other)), 404, "not_found_error"
    )
    assert_error(
        client.delete(f"/v1/models/{job['fine_tuned_model']}", headers=auth(other)), 404, "not_found_error"
    )
    assert client.get("/v1/models", headers=auth(other)).json["data"][0]["owned_by"] == "beta"


def test_delete_model_removes_files_and_later_use_is_404(client, make_key, store, settings):
    token = make_key("alpha")
    model_dir = settings.data_dir / "local" / "m1" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "adapter.bin").write_bytes(b"weights")
    job = finished_job(store, "alpha", provider="local", local_model_dir=str(model_dir))
    name = job["fine_tuned_model"]
    r = client.delete(f"/v1/models/{name}", headers=auth(token))
    assert r.status_code == 200 and r.json == {"id": name, "object": "model", "deleted": True}
    assert not model_dir.exists()
    assert_error(client.get(f"/v1/models/{name}", headers=auth(token)), 404, "not_found_error")
    assert_error(chat(client, token, name), 404, "not_found_error", "model")
    assert_error(client.delete(f"/v1/models/{name}", headers=auth(token)), 404, "not_found_error")
    assert client.get("/v1/models", headers=auth(token)).json["data"] == []
    # The job itself stays readable, with its history.
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth(token)).json["data"]
    assert "deleted" in events[0]["message"]


def test_delete_never_touches_paths_outside_the_data_dir(client, make_key, store, tmp_path):
    token = make_key("alpha")
    outside = tmp_path / "precious"
    outside.mkdir()
    job = finished_job(store, "alpha", provider="local", local_model_dir=str(outside))
    assert client.delete(f"/v1/models/{job['fine_tuned_model']}", headers=auth(token)).status_code == 200
    assert outside.exists()


def test_completions_refuse_unknown_and_foreign_models(client, make_key, store):
    mine = make_key("alpha")
    foreign = finished_job(store, "beta")
    assert_error(chat(client, mine, foreign["fine_tuned_model"]), 404, "not_found_error", "model")
    assert_error(chat(client, mine, "ft:gpt-4o-mini-2024-07-18:alpha::ftjob-nope"), 404, "not_found_error")
    assert_error(chat(client, mine, "gpt-4o-mini-2024-07-18"), 404, "not_found_error")
    r = client.post(
        "/v1/completions", headers=auth(mine), json={"model": foreign["fine_tuned_model"], "prompt": "hi"}
    )
    assert_error(r, 404, "not_found_error", "model")


def test_completions_bad_input_is_400_naming_the_field(client, make_key, store):
    token = make_key("alpha")
    name = finished_job(store, "alpha")["fine_tuned_model"]
    no_messages = client.post("/v1/chat/completions", headers=auth(token), json={"model": name})
    assert_error(no_messages, 400, "invalid_request_error", "messages")
    bad_role = client.post(
        "/v1/chat/completions",
        headers=auth(token),
        json={"model": name, "messages": [{"role": "wizard", "content": "x"}]},
    )
    assert_error(bad_role, 400, "invalid_request_error", "messages.0.role")
    assert_error(chat(client, token, name, n=2), 400, "invalid_request_error", "n")
    assert_error(chat(client, token, name, temperature=5), 400, "invalid_request_error", "temperature")
    assert_error(chat(client, token, name, stop=[1, 2]), 400, "invalid_request_error", "stop")
    bad_prompt = client.post("/v1/completions", headers=auth(token), json={"model": name, "prompt": [1]})
    assert_error(bad_prompt, 400, "invalid_request_error", "prompt")
    assert client.post("/v1/chat/completions", json={"model": name}).status_code == 401


def test_export_route_starts_one_build_and_refuses_what_it_cannot_export(
    client, make_key, store, settings, dispatcher
):
    token = make_key("alpha")
    model_dir = settings.data_dir / "local" / "m2" / "model"
    model_dir.mkdir(parents=True)
    job = finished_job(store, "alpha", provider="local", local_model_dir=str(model_dir))
    name = job["fine_tuned_model"]
    url = f"/v1/models/{name}/content?format=gguf&quantization=q8_0"
    for _ in range(2):
        r = client.get(url, headers=auth(token))
        assert r.status_code == 202 and int(r.headers["Retry-After"]) > 0
        assert r.json["object"] == "model.export" and r.json["status"] == "building"
        assert r.json["format"] == "gguf" and r.json["quantization"] == "q8_0"
    exports = [args for task, args in dispatcher.sent if task == "tuneline.infer.export"]
    assert exports == [(job["id"], "gguf", "q8_0", "")]  # two requests, one build

    assert_error(client.get(url, headers=auth(make_key("beta"))), 404, "not_found_error", "model")
    assert_error(
        client.get(f"/v1/models/{name}:ckpt-step-7/content?format=adapter", headers=auth(token)),
        404,
        "not_found_error",
        "model",
    )
    assert_error(
        client.get(f"/v1/models/{name}/content?format=onnx", headers=auth(token)),
        400,
        "invalid_request_error",
        "format",
    )
    sandbox = finished_job(store, "alpha")["fine_tuned_model"]
    r = client.get(f"/v1/models/{sandbox}/content?format=merged", headers=auth(token))
    assert_error(r, 409, "conflict_error")
    assert r.json["error"]["code"] == "not_supported" and "export" in r.json["error"]["message"]


def test_options_on_model_content_advertises_only_its_own_methods(client, make_key):
    """``/v1/models/{model}`` (GET, DELETE) must not also match ``…/content`` (GET only)."""
    token = make_key()
    url = "/v1/models/ft:org/base:acme::ftjob-0123456789abcdef01234567/content?format=adapter"
    r = client.options(url, headers={"Authorization": f"Bearer {token}"})
    allowed = {m.strip() for m in r.headers["Allow"].split(",")}
    assert "DELETE" not in allowed and "GET" in allowed
    model = client.options(
        "/v1/models/ft:org/base:acme::ftjob-0123456789abcdef01234567",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert "DELETE" in {m.strip() for m in model.headers["Allow"].split(",")}
