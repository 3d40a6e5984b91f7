"""The dashboard in a real headless Chromium against `spectra serve` (embedded defaults): sign in,
submit from the generated form, watch the job succeed live, read its charts back, download a file,
cancel a job, see the API's 422 beside the field, and data containing markup rendered as text.
Every page is screenshotted (tmp folder, and SPECTRA_SCREENSHOT_DIR when set)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.service.support.browser import Screenshots, chromium
from tests.service.support.client import ApiClient
from tests.service.support.stack import Stack

pytestmark = pytest.mark.integration

TINY = "raincandy-u/TinyStories-656K"
QUICK = {"calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
         "evaluation": {"corpus": "tinystories", "seq_len": 64, "max_windows": 2}}
# The cancel test's job: thousands of 8-token evaluation windows keep it busy for a minute or more,
# and cancel takes effect at the next window.
LONG = {"model": TINY, "method": "svd", "target_ratio": 0.2,
        "evaluation": {"corpus": "wikitext2", "seq_len": 8, "max_windows": 40000}}
MARKUP = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

# Every status change the job page shows, recorded in the page (to prove it changed without a reload).
RECORD_STATUSES = """() => {
  window.__statuses = [];
  const record = () => {
    const el = document.querySelector('#job-status .status');
    if (el && window.__statuses[window.__statuses.length - 1] !== el.textContent) window.__statuses.push(el.textContent);
  };
  new MutationObserver(record).observe(document.getElementById('view'), {subtree: true, childList: true, characterData: true});
  record();
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Screenshots:
    return Screenshots(tmp_path_factory.mktemp("screenshots"))


@pytest.fixture(scope="module")
def api(embedded: Stack) -> ApiClient:
    return embedded.client("dashboard")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # The browser logs every 4xx answer as a console error; the tests provoke some on purpose.
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    yield page
    context.close()
    assert not problems, problems  # a script error or a CSP violation


def sign_in(page: Page, stack: Stack, key: str, at: str = "") -> None:
    page.goto(f"{stack.base_url}/{at}")
    page.fill("#api-key", key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")


def ppl(value: float) -> str:
    return f"{value:.2f}"  # format.js num(): two decimals


def test_page_and_assets_carry_a_csp_without_unsafe_inline(embedded: Stack) -> None:
    for path in ("/", "/dashboard/js/main.js", "/dashboard/css/dashboard.css"):
        response = httpx.get(embedded.base_url + path)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = httpx.get(embedded.base_url + "/").text
    assert "<script type=\"module\" src=\"/dashboard/js/main.js\"></script>" in page
    assert page.count("<script") == 1 and "style=" not in page  # nothing inline the CSP would have to allow
    missing = httpx.get(embedded.base_url + "/dashboard/nope.js")
    assert missing.status_code == 404 and "Content-Security-Policy" in missing.headers


def test_sign_in_keeps_the_key_in_session_storage_and_headers(page: Page, embedded: Stack, api: ApiClient,
                                                              shots: Screenshots) -> None:
    urls: list[str] = []
    keyed: list[str] = []
    page.on("request", lambda r: (urls.append(r.url), keyed.append(r.url) if r.headers.get("x-api-key") == api.key else None))
    page.goto(embedded.base_url + "/")
    shots.take(page, "01-sign-in")
    page.fill("#api-key", "sk-not-a-real-key")
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('not valid')")
    assert page.is_hidden("#nav")
    page.fill("#api-key", api.key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#jobs-table")
    assert page.evaluate("sessionStorage.getItem('spectra.apiKey')") == api.key
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""
    assert not any(api.key in url for url in urls), "the key appeared in a URL"
    assert any("/v1/jobs" in url for url in keyed), "the jobs list was not requested with the key header"
    assert api.key not in page.content()
    page.click("#sign-out")
    page.wait_for_selector("#sign-in")
    assert page.evaluate("sessionStorage.getItem('spectra.apiKey')") is None


def _fill_form(page: Page, fields: dict[str, str], method: str) -> None:
    page.wait_for_selector("#submit-form")
    page.select_option("#f-method", method)
    for selector, value in fields.items():
        if page.eval_on_selector(selector, "el => el.tagName") == "SELECT":
            page.select_option(selector, value)
        else:
            page.fill(selector, value)


def test_submit_from_the_form_and_watch_it_succeed_live(page: Page, embedded: Stack, api: ApiClient,
                                                        shots: Screenshots) -> None:
    sign_in(page, embedded, api.key, "#/submit")
    _fill_form(page, {
        "#f-model": TINY, "#f-target_ratio": "0.2",
        "#f-calibration-source": "tinystories", "#f-calibration-samples": "4", "#f-calibration-seq_len": "64",
        "#f-evaluation-corpus": "tinystories", "#f-evaluation-seq_len": "64", "#f-evaluation-max_windows": "2",
    }, method="svd_llm")
    # The option fields come from GET /v1/methods: svd_llm's, with their descriptions and bounds.
    assert page.is_visible("#f-options-update_samples")
    assert "≤ 1024" in page.inner_text("[data-field='options.update_samples']")
    shots.take(page, "02-submit-form")
    stream_answers: list[str] = []  # Content-Type of each answer to the page's event-stream requests
    page.on("response", lambda r: stream_answers.append(r.headers.get("content-type", ""))
            if r.url.endswith("/events") and r.request.headers.get("accept") == "text/event-stream" else None)
    page.evaluate("window.__sameDocument = true")
    page.click("#submit-job")
    page.wait_for_function("() => location.hash.startsWith('#/jobs/')")
    page.evaluate(RECORD_STATUSES)
    job_id = page.evaluate("location.hash.split('/')[2]")
    page.wait_for_selector("#job-status .status-succeeded", timeout=120_000)
    statuses = page.evaluate("window.__statuses")
    assert statuses[-1] == "succeeded" and set(statuses[:-1]) & {"queued", "running"}, statuses
    assert page.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
    # Followed over the job's Server-Sent Events stream (fetched with the key header).
    assert stream_answers and stream_answers[0].startswith("text/event-stream"), stream_answers

    job = api.job(job_id)
    metrics = job["metrics"]
    assert job["spec"]["method"] == "svd_llm" and job["spec"]["evaluation"]["max_windows"] == 2
    # The charts are drawn from the job's own numbers.
    page.wait_for_selector("#chart-ranks rect[data-matrix]")
    drawn = page.eval_on_selector_all("#chart-ranks rect[data-matrix]",
                                      "els => Object.fromEntries(els.map(e => [e.dataset.matrix, Number(e.dataset.rank)]))")
    assert drawn == metrics["method_details"]["ranks"] and len(drawn) == 14  # 2 layers x 7 projections
    bars = page.eval_on_selector_all("#chart-stages rect.bar", "els => els.map(e => e.dataset.label)")
    assert bars == list(metrics["seconds"])
    row = page.inner_text("#before-after tr[data-row='perplexity']")
    assert ppl(metrics["ppl_before"]) in row and ppl(metrics["ppl_after"]) in row
    assert f"{metrics['achieved_ratio'] * 100:.2f} %" in page.inner_text("#summary")
    # The preflight estimate the API stored at submission: its modes, and its stage times beside the measured.
    estimate = job["estimate"]
    assert page.locator("#estimate-modes tbody tr").count() == len(estimate["modes"])
    outlines = page.eval_on_selector_all("#chart-stages rect.bar-compare",
                                         "els => Object.fromEntries(els.map(e => [e.dataset.label, Number(e.dataset.compare)]))")
    assert outlines == {k: v for k, v in estimate["stage_seconds"].items() if k in metrics["seconds"]}
    page.wait_for_selector("#events tr[data-kind='state']:has-text('succeeded')")
    page.wait_for_selector("#artifacts a.download")
    shots.take(page, "03-job-succeeded")

    with page.expect_download() as download:
        page.click("#artifacts a.download:text-is('compression.json')")
    report = json.loads(Path(download.value.path()).read_text())
    assert report["achieved_ratio"] == metrics["achieved_ratio"] and report["method"] == "svd_llm"
    with page.expect_download() as download:
        page.click("#download-archive")
    assert download.value.suggested_filename == f"spectra-{job_id}.tar"
    with tarfile.open(download.value.path()) as tar:
        names = tar.getnames()
        packed = json.load(tar.extractfile(f"spectra-{job_id}/compression.json"))  # type: ignore[arg-type]
    assert {f"spectra-{job_id}/{a['name']}" for a in api.artifacts(job_id)} <= set(names)
    assert packed == report


def test_validation_errors_appear_beside_their_fields(page: Page, embedded: Stack, api: ApiClient,
                                                       shots: Screenshots) -> None:
    before = len(api.http.get("/v1/jobs").json()["items"])
    sign_in(page, embedded, api.key, "#/submit")
    _fill_form(page, {"#f-model": TINY, "#f-target_ratio": "1.5", "#f-options-update_samples": "5000"},
               method="svd_llm")
    page.click("#submit-job")
    ratio_error = page.locator(".field-error[data-error-for='target_ratio']")
    ratio_error.wait_for()
    assert "less than 1" in ratio_error.inner_text()
    option_error = page.locator(".field-error[data-error-for='options.update_samples']")
    assert "1024" in option_error.inner_text()
    assert page.get_attribute("[data-field='target_ratio']", "class") == "field invalid"
    assert page.evaluate("location.hash") == "#/submit"
    shots.take(page, "04-submit-422")
    assert len(api.http.get("/v1/jobs").json()["items"]) == before  # nothing was submitted


def test_upload_a_dataset_and_submit_with_it(page: Page, embedded: Stack, api: ApiClient, shots: Screenshots,
                                            data_dir: Path) -> None:
    text = (data_dir / "tinystories" / "TinyStories-valid.head16k.txt").read_bytes()[:4000]
    sign_in(page, embedded, api.key, "#/submit")
    page.wait_for_selector("#datasets")
    page.set_input_files("#dataset-file", files=[{"name": "stories.txt", "mimeType": "text/plain", "buffer": text}])
    page.click("#dataset-upload")
    page.wait_for_selector("#dataset-status:has-text('uploaded stories.txt')")
    (dataset,) = [d for d in api.http.get("/v1/datasets").json() if d["name"] == "stories.txt"]
    assert page.locator(f"#datasets-list tr[data-dataset='{dataset['id']}']").count() == 1
    # Picked at once: the calibration fields now name it.
    assert page.input_value("#f-calibration-source") == "dataset"
    assert page.input_value("#f-calibration-dataset_id") == dataset["id"]
    _fill_form(page, {"#f-model": TINY, "#f-target_ratio": "0.2", "#f-calibration-samples": "2",
                      "#f-calibration-seq_len": "32"}, method="asvd")
    page.uncheck("#f-evaluation-enabled")
    shots.take(page, "05-submit-dataset")
    page.click("#submit-job")
    page.wait_for_function("() => location.hash.startsWith('#/jobs/')")
    job = api.job(page.evaluate("location.hash.split('/')[2]"))
    assert job["spec"]["calibration"]["source"] == "dataset"
    assert job["spec"]["calibration"]["dataset_id"] == dataset["id"]
    assert api.wait_terminal(job["id"], timeout=120)["status"] == "succeeded"
    # A file the API refuses: its message is shown, nothing is added.
    page.goto(f"{embedded.base_url}/#/submit")
    page.set_input_files("#dataset-file", files=[{"name": "weights.bin", "mimeType": "application/octet-stream",
                                                  "buffer": b"\x00\x01"}])
    page.click("#dataset-upload")
    page.wait_for_selector("#dataset-status:has-text('Upload refused')")
    assert len(api.http.get("/v1/datasets").json()) == 1


def test_cancel_a_job_from_its_page(page: Page, embedded: Stack, api: ApiClient, shots: Screenshots) -> None:
    job = api.submit_ok(LONG)
    sign_in(page, embedded, api.key, f"#/jobs/{job['id']}")
    page.click("#cancel-job")
    page.wait_for_selector("#job-status .status-cancelled", timeout=60_000)
    assert "cancelled" in page.inner_text("#job-error")
    assert page.locator("#cancel-job").count() == 0
    assert api.job(job["id"])["status"] == "cancelled"
    shots.take(page, "06-job-cancelled")


def _succeeded(api: ApiClient, method: str, ratio: float) -> dict[str, Any]:
    job = api.submit_ok({"model": TINY, "method": method, "target_ratio": ratio, **QUICK})
    done = api.wait_terminal(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    return done


def test_compare_draws_perplexity_against_achieved_ratio_per_method(page: Page, embedded: Stack, api: ApiClient,
                                                                     shots: Screenshots) -> None:
    jobs = [_succeeded(api, "svd", 0.2), _succeeded(api, "svd", 0.4), _succeeded(api, "asvd", 0.3)]
    sign_in(page, embedded, api.key, f"#/compare?model={TINY}")
    page.wait_for_selector("#chart-ppl circle.point")
    points = page.eval_on_selector_all(
        "#chart-ppl circle.point",
        "els => els.map(e => ({job: e.dataset.job, series: e.dataset.series, x: Number(e.dataset.x), y: Number(e.dataset.y)}))")
    by_job = {p["job"]: p for p in points}
    for job in jobs:
        point = by_job[job["id"]]
        assert point["series"] == job["method"]
        assert point["x"] == job["metrics"]["achieved_ratio"] and point["y"] == job["metrics"]["ppl_after"]
    assert {"svd", "asvd"} <= set(page.eval_on_selector_all("#chart-ppl .legend", "els => els.map(e => e.textContent)"))
    assert page.locator("#chart-ppl polyline.series-line").count() >= 1  # svd's two points joined
    shots.take(page, "07-compare")
    # Unticking a job removes its point.
    page.uncheck(f"#compare-jobs tr[data-job='{jobs[0]['id']}'] input")
    assert page.locator(f"#chart-ppl circle[data-job='{jobs[0]['id']}']").count() == 0


def test_jobs_table_filters_and_pages(page: Page, embedded: Stack, api: ApiClient, shots: Screenshots) -> None:
    sign_in(page, embedded, api.key)
    page.wait_for_selector("#jobs-table tbody tr[data-job]")
    shots.take(page, "08-jobs")
    page.select_option("#filter-status", "succeeded")
    page.wait_for_function("() => [...document.querySelectorAll('#jobs-table tbody tr[data-job]')]"
                           ".every(r => r.dataset.status === 'succeeded')")
    assert page.evaluate("location.hash") == "#/jobs?status=succeeded"
    page.goto(f"{embedded.base_url}/#/jobs?limit=1")
    page.wait_for_selector("#jobs-table tbody tr[data-job]")
    first = page.get_attribute("#jobs-table tbody tr[data-job]", "data-job")
    page.click("#next-page")
    page.wait_for_function(f"() => document.querySelector('#jobs-table tbody tr[data-job]')?.dataset.job !== '{first}'")
    assert page.inner_text("#page-info").startswith("page 2")
    page.click("#prev-page")
    page.wait_for_function(f"() => document.querySelector('#jobs-table tbody tr[data-job]')?.dataset.job === '{first}'")


def test_markup_in_a_model_id_and_messages_stays_text(page: Page, embedded: Stack, api: ApiClient,
                                                      shots: Screenshots) -> None:
    # The API refuses such a model id, so write the row directly (as an older version or another
    # client could have): the page must show it as the characters it is.
    from app import crud
    from app.core.db import session_scope
    from app.models import Tenant

    with session_scope(embedded.settings().database_url or "") as session:
        tenant = session.query(Tenant).filter_by(name="dashboard").one()
        job = crud.create_job(session, tenant_id=tenant.id, spec={
            "model": MARKUP, "method": "svd", "target_ratio": 0.2, "revision": None})
        job.status, job.error_code, job.error_message = "failed", "invalid_input", MARKUP
        job.finished_at = datetime.now(timezone.utc)
        crud.add_event(session, job_id=job.id, kind="error", message=MARKUP)
        job_id = job.id
    sign_in(page, embedded, api.key)
    cell = page.locator(f"#jobs-table tr[data-job='{job_id}'] td.model")
    cell.wait_for()
    assert cell.inner_text() == MARKUP
    page.goto(f"{embedded.base_url}/#/jobs/{job_id}")
    page.wait_for_selector("#events tr[data-kind='error']")
    assert page.inner_text("#job-title .model") == MARKUP
    assert MARKUP in page.inner_text("#job-error") and MARKUP in page.inner_text("#events")
    assert page.locator("#view img, #view script").count() == 0
    assert page.evaluate("window.__xss") is None
    shots.take(page, "09-markup-as-text")


def test_event_stream_parser_reassembles_events_split_across_chunks(page: Page, embedded: Stack, api: ApiClient) -> None:
    sign_in(page, embedded, api.key)
    messages = page.evaluate("""async () => {
      const { EventStreamParser } = await import('/dashboard/js/stream.js');
      const got = [];
      const parser = new EventStreamParser((m) => got.push(m));
      for (const chunk of ['retry: 2000\\n\\n: keep-alive\\n\\nevent: sta', 'ge\\nid: 7\\ndata: {"a":', '1}\\r\\n\\r\\n',
                           'data: line one\\ndata: line two\\n\\n', 'event: job\\ndata: {}\\n']) parser.push(chunk);
      return got;
    }""")
    assert messages == [
        {"event": "stage", "data": '{"a":1}', "id": "7"},
        {"event": "message", "data": "line one\nline two", "id": None},
    ]  # the last event is not finished (no blank line yet), so it is not delivered
