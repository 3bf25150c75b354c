"""The ops console in headless Chromium (Debian's, driven by Playwright) against the live stack."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from openai import OpenAI

from service.core import auth
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Hooks
from tests.support.procs import REPO, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "var" / "screenshots"
MODEL = "gpt-4o-mini-2024-07-18"
EXPECT_S = 30_000  # ms: a polling page sees a change within its refresh period; this is the ceiling


# Landmarks, one h1, and an accessible name for every control (a label, aria-label or text).
A11Y_PROBLEMS = """() => {
  const problems = [];
  for (const sel of ["header[role=banner]", "main", "footer[role=contentinfo]"]) {
    if (!document.querySelector(sel)) problems.push(`missing landmark ${sel}`);
  }
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  if (!document.documentElement.lang) problems.push("no lang attribute");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    const labelled = (el.labels && el.labels.length) || el.getAttribute("aria-label");
    if (!labelled) problems.push(`unlabelled ${el.id || el.name}`);
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    const name = (el.getAttribute("aria-label") || el.textContent || "").trim();
    if (!name && el.offsetParent !== null) problems.push(`unnamed: ${el.outerHTML.slice(0, 80)}`);
  }
  return problems;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which("chromium") is None or not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed and could not be (make test runs `make chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as pw:
        # The system browser only: Playwright's own browser downloads are never used.
        chromium = pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Console:
    """One browser context (a fresh tab session) on the console, failing on page errors or
    any request that would leave this machine (the page must work offline)."""

    def __init__(self, browser: Any, base_url: str, phone: bool = False) -> None:
        viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
        self.base_url = base_url
        self.context = browser.new_context(viewport=viewport, locale="zh-CN")
        self.page = self.context.new_page()
        self.page_errors: list[str] = []
        self.external: list[str] = []
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        self.context.route("**/*", self._only_local)
        self.page.set_default_timeout(EXPECT_S)

    def _only_local(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def open(self, fragment: str = "") -> Any:
        self.page.goto(f"{self.base_url}/console/{fragment}")
        return self.page

    def sign_in(self, key: str, refresh_s: int = 1, stuck_minutes: float = 15) -> Any:
        page = self.open()
        page.evaluate(
            "s => localStorage.setItem('tuneline.console.settings', s)",
            json.dumps({"refreshSeconds": refresh_s, "stuckMinutes": stuck_minutes}),
        )
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("navigation", name="Main").wait_for()
        return page

    def shot(self, name: str) -> None:
        """Save a screenshot for reviewers, after checking the page's basic accessibility."""
        problems = self.page.evaluate(A11Y_PROBLEMS)
        assert not problems, (name, problems)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert not self.page_errors, self.page_errors
        assert not self.external, f"the page tried to reach the internet: {self.external}"


@pytest.fixture
def console(browser: Any, stack: Any) -> Iterator[Any]:
    opened: list[Console] = []

    def make(phone: bool = False) -> Console:
        opened.append(Console(browser, stack.base_url, phone))
        return opened[-1]

    yield make
    for c in opened:
        c.close()


def sdk(stack: Any, token: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=0, timeout=30)


def upload(client: OpenAI, data: bytes, name: str, status: str = "processed") -> str:
    f = client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune")
    wait_until(lambda: client.files.retrieve(f.id).status == status, 30, what=f"file {status}")
    return f.id


@pytest.fixture(scope="module")
def tenant_a(stack: Any) -> dict[str, Any]:
    """One tenant with a processed training file, shared by the tests below."""
    token = stack.key()
    client = sdk(stack, token)
    training = upload(client, (SAMPLE_DATA / "funds_qa.jsonl").read_bytes(), "funds_qa.jsonl")
    return {"token": token, "client": client, "training": training}


def create_job(tenant: dict[str, Any], sandbox: dict[str, Any], **extra: Any) -> str:
    job = tenant["client"].fine_tuning.jobs.create(
        model=MODEL,
        training_file=tenant["training"],
        suffix="funds",
        metadata={"team": "研究部"},
        extra_body={"provider": "sandbox", "sandbox": sandbox, **extra},
    )
    return job.id


def api_status(tenant: dict[str, Any], job_id: str) -> str:
    return tenant["client"].fine_tuning.jobs.retrieve(job_id).status


def test_sign_in_rejects_invalid_and_revoked_keys(console, stack):
    c = console()
    page = c.open()
    assert page.evaluate("document.characterSet") == "UTF-8"
    page.get_by_label("API key").fill("tl-nothing-here")
    page.keyboard.press("Enter")  # the form submits from the keyboard
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "not accepted" in alert.inner_text() and "Incorrect API key provided" in alert.inner_text()
    c.shot("sign-in-invalid")

    record, token = auth.create_key(stack.store, "revoked-soon")
    page = c.sign_in(token)
    kept = "sessionStorage.getItem('tuneline.console.apiKey')"
    assert page.evaluate(kept) == token and page.evaluate("document.cookie") == ""
    assert token not in page.url and token not in page.evaluate("JSON.stringify(localStorage)")
    auth.revoke_key(stack.store, record.id)
    page.goto(f"{stack.base_url}/console/#/jobs")  # the next API call meets the revoked key
    notice = page.get_by_text("no longer accepted")
    notice.wait_for()
    assert page.get_by_label("API key").is_visible()
    assert page.evaluate(kept) is None  # the rejected key is forgotten


def test_job_goes_from_queued_to_succeeded_without_reload(console, stack, tenant_a):
    # Scaled by the stack's 0.02 sandbox time scale: ~12 s queued, then 10 steps of 0.5 s.
    job_id = create_job(
        tenant_a, {"queued_s": 600, "step_s": 25, "steps": 10}, prepare={"split": {"validation": 0.1}}
    )
    wait_until(lambda: api_status(tenant_a, job_id) == "queued", 30, interval=0.2, what="job queued")
    c = console()
    page = c.sign_in(tenant_a["token"])
    page.evaluate("window.__noReload = true")
    page.get_by_role("link", name="Jobs").click()
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.wait_for()
    assert row.get_attribute("data-status") in ("queued", "running")
    assert "研究部" not in row.inner_text()  # metadata is on the job page, not the list
    c.shot("jobs-list")
    page.get_by_role("link", name=job_id).click()
    badge = page.locator("#job-status .badge")
    badge.wait_for()
    assert badge.inner_text() in ("queued", "running")
    page.locator("#job-status .badge.succeeded").wait_for()
    log = page.get_by_role("log", name="Event log")
    log.get_by_text(f"The job has successfully completed: ft:{MODEL}").wait_for()  # streamed live
    assert page.evaluate("window.__noReload") is True
    assert "team: 研究部" in page.locator("#job-summary").inner_text()  # Chinese metadata as text
    assert "No evaluation for this job." in page.locator("#evaluation").inner_text()
    loss = page.locator('figure[data-chart="Loss"]')
    loss.locator(".chart-box canvas").wait_for()
    page.wait_for_function(
        "() => document.querySelector('figure[data-chart=\"Loss\"] .chart-box').dataset.points === '10'"
    )
    legend = loss.locator(".u-legend").inner_text()
    assert "train_loss" in legend and "valid_loss" in legend
    loss.get_by_text("Loss: data table").click()
    assert loss.locator("details tbody tr").count() == 10
    c.shot("job-succeeded")


def test_file_report_groups_line_numbered_findings_and_shows_chinese(console, stack, tenant_a):
    name = "基金问答-坏行.jsonl"
    bad = upload(
        tenant_a["client"], (SAMPLE_DATA / "bad" / "not_json_line.jsonl").read_bytes(), name, status="error"
    )
    c = console()
    page = c.sign_in(tenant_a["token"])
    page.get_by_role("link", name="Files").click()
    page.get_by_role("link", name=bad).wait_for()
    assert page.get_by_role("cell", name=name).is_visible()
    c.shot("files-list")
    page.get_by_role("link", name=bad).click()
    group = page.locator('details.findings[data-code="not_json"]')
    group.wait_for()
    finding = group.locator("tr[data-line]")
    assert finding.count() >= 1
    line = finding.first.get_attribute("data-line")
    assert line and int(line) > 0 and f"line {line}" in finding.first.inner_text()
    assert page.get_by_text(name).is_visible()
    font_stack = page.get_by_text(name).evaluate("el => getComputedStyle(el).fontFamily")
    assert "Noto Sans CJK SC" in font_stack and "WenQuanYi Micro Hei" in font_stack  # CJK fallbacks
    assert (
        page.locator("#token-stats").is_visible()
        and "o200k_base" in page.locator("#token-stats").inner_text()
    )
    assert MODEL in page.locator("#cost-estimate").inner_text()
    c.shot("file-report")
    phone = console(phone=True)
    phone.sign_in(tenant_a["token"]).goto(f"{stack.base_url}/console/#/files/{bad}")
    phone.page.locator('details.findings[data-code="not_json"]').wait_for()
    phone.shot("file-report-phone")


def test_stuck_job_is_highlighted_and_cancel_works(console, stack, tenant_a):
    # 100 s per step: running, but no new event for longer than a 3-second stuck threshold.
    job_id = create_job(tenant_a, {"queued_s": 0, "validating_s": 0, "step_s": 5000})
    wait_until(lambda: api_status(tenant_a, job_id) == "running", 30, interval=0.2, what="job running")
    c = console()
    page = c.sign_in(tenant_a["token"])
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Stuck after (minutes without progress)").fill("0.05")
    page.get_by_label("Refresh lists every (seconds)").fill("1")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Settings saved.").wait_for()
    c.shot("settings")
    page.get_by_role("link", name="Jobs").click()
    page.locator(f'tr.stuck[data-job-id="{job_id}"]').wait_for()
    assert "Stuck" in page.locator(f'tr[data-job-id="{job_id}"]').inner_text()
    c.shot("jobs-stuck")
    page.get_by_role("link", name=job_id).click()
    page.get_by_role("button", name="Cancel job").click()
    from playwright.sync_api import expect  # installed: the console fixture skips otherwise

    confirm = page.get_by_role("button", name="Yes, cancel this job")
    confirm.wait_for()
    expect(confirm).to_be_focused()  # focus moves to the confirmation
    # The page refreshes the job every second; the open confirmation (and its focus) outlives that.
    for _ in range(2):  # once the second has come, the first has been applied
        with page.expect_response(lambda r: r.url.endswith(f"/v1/fine_tuning/jobs/{job_id}"), timeout=10_000):
            pass
    expect(confirm).to_be_focused()
    page.keyboard.press("Enter")
    page.locator("#job-status .badge.cancelled").wait_for()
    assert api_status(tenant_a, job_id) == "cancelled"
    assert not page.get_by_role("button", name="Cancel job").is_visible()
    c.shot("job-cancelled")


def test_redeliver_a_disabled_webhook(console, stack, tenant_a):
    receiver = Hooks([410, 200])  # 410 disables the URL; the manual redelivery then succeeds
    try:
        job_id = create_job(
            tenant_a, {"validating_s": 0, "queued_s": 0, "steps": 3}, webhook={"url": receiver.url}
        )
        token = tenant_a["token"]

        def deliveries() -> list[dict[str, Any]]:
            r = httpx2.get(
                f"{stack.base_url}/v1/fine_tuning/jobs/{job_id}/webhook_deliveries",
                headers={"Authorization": f"Bearer {token}"},
            )
            return r.json()["data"]  # type: ignore[no-any-return]

        wait_until(lambda: (d := deliveries()) and d[0]["status"] == "disabled", 60, what="delivery disabled")
        c = console()
        page = c.sign_in(token)
        page.goto(f"{stack.base_url}/console/#/jobs/{job_id}")
        row = page.locator("#deliveries tr[data-delivery-id]").first
        row.wait_for()
        assert row.get_attribute("data-status") == "disabled"
        delivery_id = row.get_attribute("data-delivery-id")
        page.get_by_role("button", name=f"Redeliver {delivery_id}").click()
        page.get_by_text(f"Delivery {delivery_id} queued again").wait_for()
        page.locator(f'#deliveries tr[data-delivery-id="{delivery_id}"][data-status="delivered"]').wait_for()
        assert len(receiver.received) == 2
        assert receiver.received[0][0]["webhook-id"] == receiver.received[1][0]["webhook-id"]
        c.shot("job-webhook-redelivered")
    finally:
        receiver.server.shutdown()


def test_other_tenants_job_unknown_ids_and_api_errors(console, stack, tenant_a):
    job_id = create_job(tenant_a, {"steps": 1})
    c = console()
    page = c.sign_in(stack.key())  # another tenant's member key
    page.get_by_role("link", name="Jobs").click()
    page.get_by_text("No jobs match these filters.").wait_for()
    page.goto(f"{stack.base_url}/console/#/jobs/{job_id}")
    page.get_by_role("heading", name="Not found").wait_for()
    assert f"Job {job_id} was not found" in page.locator("main").inner_text()
    page.goto(f"{stack.base_url}/console/#/jobs/ftjob-doesnotexist")
    page.get_by_text("Job ftjob-doesnotexist was not found").wait_for()
    c.shot("not-found")
    page.goto(f"{stack.base_url}/console/#/files/file-doesnotexist")
    page.get_by_text("File file-doesnotexist was not found").wait_for()
    # An error from the API is shown with its envelope message, not swallowed.
    page.goto(f"{stack.base_url}/console/#/jobs?status=bogus")
    alert = page.get_by_role("alert")
    alert.wait_for()
    text = alert.inner_text()
    assert "Could not list jobs" in text and "400" in text and "invalid_request_error" in text
    c.shot("api-error")


def test_overview_for_an_ops_key(console, stack, tenant_a):
    failed = create_job(tenant_a, {"fail_at": "validating_files", "validating_s": 0})
    wait_until(lambda: api_status(tenant_a, failed) == "failed", 30, interval=0.2, what="job failed")
    c = console()
    page = c.sign_in(stack.key("ops-team", role="ops"))
    status = page.locator('[aria-labelledby="h-status"]')
    status.wait_for()
    assert int(status.locator('li[data-key="failed"] .n').inner_text()) >= 1
    page.get_by_role("heading", name="Recent failures").wait_for()
    page.locator(f"#overview a[href='#/jobs/{failed}']").wait_for()  # another tenant's failure
    queues = page.locator('[aria-labelledby="h-queues"]').inner_text()
    assert "provider" in queues and "webhooks" in queues  # queue depths: ops only
    c.shot("overview")
    other_token = stack.key()
    other = {"token": other_token, "client": sdk(stack, other_token)}
    other["training"] = upload(other["client"], (SAMPLE_DATA / "funds_qa.jsonl").read_bytes(), "qa.jsonl")
    other_job = create_job(other, {"steps": 1})
    page.get_by_role("link", name="Jobs").click()
    for job_id in (failed, other_job):  # ops see every tenant's jobs, with a tenant column
        page.locator(f'tr[data-job-id="{job_id}"]').wait_for()
    page.get_by_role("columnheader", name="Tenant").wait_for()
    other_tenant = other["client"].fine_tuning.jobs.retrieve(other_job).organization_id
    page.get_by_role("textbox", name="Tenant").fill(other_tenant)
    page.get_by_role("button", name="Apply filters").click()
    page.locator(f'tr[data-job-id="{failed}"]').wait_for(state="detached")
    assert page.locator(f'tr[data-job-id="{other_job}"]').is_visible()
    c.shot("jobs-list-ops-tenant")
    page.get_by_role("link", name="Overview").click()
    # The jobs page has a Tenant box too: fill the overview's once it has replaced that page.
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    page.get_by_role("textbox", name="Tenant").fill(other_tenant)
    page.get_by_role("button", name="Show").click()
    page.get_by_role("heading", name=f"Overview: {other_tenant}").wait_for()
    page.get_by_text("1 job in total.").wait_for()  # only that tenant's one job
    phone = console(phone=True)
    phone.sign_in(stack.key("ops-team", role="ops")).get_by_role("link", name="Jobs").click()
    phone.page.locator("tr[data-job-id]").first.wait_for()
    phone.shot("jobs-list-phone")


def test_pause_and_resume_buttons_and_a_dpo_jobs_curves(console, stack, tenant_a):
    """A running DPO job: its page draws preference accuracy and reward margin (not token
    accuracy), pauses it with a button and resumes it with another (the sandbox pauses for real)."""
    from service.core.jobs.metrics import DPO_METRIC_COLUMNS
    from service.core.store import jobs as repo
    from tests.api.test_jobs_local_api import PREFERENCE

    preference = upload(tenant_a["client"], PREFERENCE, "pairs.jsonl")
    job = tenant_a["client"].fine_tuning.jobs.create(
        model=MODEL,
        training_file=preference,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
        extra_body={"provider": "sandbox", "sandbox": {"queued_s": 0, "validating_s": 0, "step_s": 5000}},
    )
    wait_until(lambda: api_status(tenant_a, job.id) == "running", 30, interval=0.2, what="job running")
    rows = [
        {name: None for name in DPO_METRIC_COLUMNS}
        | {
            "step": s,
            "train_loss": 0.7 - 0.1 * s,
            "train_preference_accuracy": 0.5 + 0.1 * s,
            "train_reward_margin": 0.05 * s,
        }
        for s in (1, 2, 3)
    ]
    repo.put_metrics(stack.store, job.id, rows)
    c = console()
    page = c.sign_in(tenant_a["token"])
    page.goto(f"{stack.base_url}/console/#/jobs/{job.id}")
    points = 'title => document.querySelector(`figure[data-chart="${title}"] .chart-box`)?.dataset.points'
    for title in ("Loss", "Preference accuracy", "Reward margin"):
        page.wait_for_function(f"() => ({points})({json.dumps(title)}) === '3'")
    assert page.locator('figure[data-chart="Token accuracy"]').count() == 0
    accuracy = page.locator('figure[data-chart="Preference accuracy"]')
    assert "train_preference_accuracy" in accuracy.locator(".u-legend").inner_text()
    assert "Method\ndpo" in page.locator("#job-summary").inner_text()

    page.get_by_role("button", name="Pause job").click()
    page.locator("#job-status .badge.paused").wait_for()
    assert api_status(tenant_a, job.id) == "paused"
    assert not page.get_by_role("button", name="Pause job").is_visible()
    c.shot("job-paused")
    page.get_by_role("button", name="Resume job").click()
    page.locator("#job-status .badge.running").wait_for()
    assert api_status(tenant_a, job.id) == "running"
    page.get_by_role("button", name="Pause job").wait_for()
    tenant_a["client"].fine_tuning.jobs.cancel(job.id)


def test_imports_page_shows_progress_what_was_skipped_and_the_retraining(console, stack):
    """An account (the sandbox's own) imported, two ids asked for, one unknown; then re-trained."""
    owner = OpenAI(base_url=stack.base_url + "/sandbox/v1", api_key="sandbox-key", max_retries=0, timeout=30)
    lines = (SAMPLE_DATA / "funds_qa.jsonl").read_bytes().splitlines()[:30]
    training = owner.files.create(
        file=("qa.jsonl", io.BytesIO(b"\n".join(lines) + b"\n")), purpose="fine-tune"
    )
    job = owner.fine_tuning.jobs.create(
        model=MODEL, training_file=training.id, extra_body={"sandbox": {"steps": 2}}
    )
    wait_until(lambda: owner.fine_tuning.jobs.retrieve(job.id).status == "succeeded", 60, what="account job")
    token = stack.key()
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "source": "openai",
        "base_url": stack.base_url + "/sandbox/v1",
        "api_key": "sandbox-key",
        "jobs": [job.id, "ftjob-nosuchjob"],
    }
    import_id = httpx2.post(stack.base_url + "/v1/imports", json=body, headers=headers, timeout=30).json()[
        "id"
    ]

    c = console()
    page = c.sign_in(token)
    page.get_by_role("link", name="Imports").click()
    row = page.locator(f'tr[data-import-id="{import_id}"]')
    row.wait_for()
    page.locator(
        f'tr[data-import-id="{import_id}"][data-status="succeeded"]'
    ).wait_for()  # refreshed, no reload
    c.shot("imports-list")
    row.get_by_role("link", name=import_id).click()
    skipped = page.get_by_role("row").filter(has_text="ftjob-nosuchjob")
    skipped.wait_for()
    assert "job_not_found" in skipped.inner_text()
    assert "Not re-trained yet" in page.locator("main").inner_text()

    # The session stack has no openai provider configured: the sandbox candidate alone.
    retrain = {
        "candidates": [{"provider": "sandbox", "model": MODEL}],
        "include_original": False,
        "split": {"test": 0.2},
    }

    def retrained() -> dict[str, Any] | None:
        r = httpx2.post(
            stack.base_url + f"/v1/imports/{import_id}/retrain", json=retrain, headers=headers, timeout=30
        )
        return None if r.status_code == 422 and r.json()["error"]["code"] == "file_not_ready" else r.json()

    out = wait_until(retrained, 60, what="the imported file prepared")
    (entry,) = out["data"]
    page.reload()
    section = page.locator(f'section[data-experiment-id="{entry["experiment_id"]}"]')
    section.wait_for()
    assert MODEL in section.inner_text() and "sandbox" in section.inner_text()
    assert section.locator('tr[data-evaluate-only="false"]').count() == 1
    c.shot("import-retrained")
