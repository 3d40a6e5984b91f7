// One job: live progress, cancel, before/after table, charts from its metrics, event log, downloads.

import { ApiError, Conditional, auth, request } from "./api.js";
import { barChart, layerChart, rankHeatmap } from "./charts.js";
import { fill, h, safeHref } from "./dom.js";
import { TERMINAL, bytes, dash, jobDuration, num, percent, seconds, time } from "./format.js";
import { statusBadge } from "./jobs.js";
import { poll } from "./poll.js";
import { followStream } from "./stream.js";

const STAGES = ["load", "calibrate", "evaluate_before", "compress", "evaluate_after", "export", "upload"];

function firstNumber(...values) {
  return values.find((v) => typeof v === "number" && Number.isFinite(v));
}

/**
 * Stages done / current, the fraction of the current stage (what run() reports), and where the
 * server says so (on the job's progress or on the latest progress event): the overall fraction, the
 * layer being worked on out of how many, and the ETA.
 */
function progressView(job, step) {
  const own = job.progress || {};
  const sameStage = step && (!own.stage || step.stage === own.stage);  // a layer of an earlier stage is stale
  const p = { ...(sameStage ? step : {}), ...Object.fromEntries(Object.entries(own).filter(([, v]) => v !== null)) };
  const done = job.status === "succeeded";
  const fraction = firstNumber(p.fraction) ?? (done ? 1 : 0);
  const overall = firstNumber(p.overall_fraction, p.overall);
  const current = STAGES.indexOf(p.stage);
  const facts = [["stage", p.stage || dash], ["stage progress", percent(fraction, 0)]];
  if (overall !== undefined) facts.push(["overall", percent(overall, 0)]);
  const layer = firstNumber(p.layer, p.layer_index);
  const layers = firstNumber(p.layers, p.num_layers, p.layer_count, p.total_layers);
  if (layer !== undefined) facts.push(["layer", layers !== undefined ? `${layer} / ${layers}` : String(layer)]);
  const eta = firstNumber(p.eta_seconds, p.eta);
  if (eta !== undefined && !TERMINAL.has(job.status)) facts.push(["ETA", seconds(eta)]);
  facts.push(["elapsed", seconds(jobDuration(job))]);
  return h("div", { class: "progress-block" },
    h("ol", { class: "stages" }, STAGES.map((stage, i) => h("li", {
      class: done || i < current ? "done" : i === current ? (TERMINAL.has(job.status) ? "stopped" : "current") : "",
      dataset: { stage } }, stage.replace("_", " ")))),
    h("progress", { id: "job-progress", max: 1, value: overall ?? fraction }),
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { fact: k } }, v)])),
    p.message ? h("p", { class: "muted", id: "progress-message" }, p.message) : null,
  );
}

function beforeAfter(m) {
  const rows = [
    ["perplexity", num(m.ppl_before), num(m.ppl_after)],
    ["parameters (whole model)", num(m.params_before), num(m.params_after)],
    ["decoder linear parameters", num(m.decoder_linear_params_before), num(m.decoder_linear_params_after)],
  ];
  return h("table", { class: "before-after", id: "before-after" },
    h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "before"), h("th", {}, "after"))),
    h("tbody", {}, rows.map(([label, before, after]) => h("tr", { dataset: { row: label } },
      h("th", {}, label), h("td", { class: "num" }, before), h("td", { class: "num" }, after)))));
}

function summary(job) {
  const m = job.metrics || {};
  const facts = [
    ["target ratio", percent(job.target_ratio)],
    ["achieved ratio (decoder linears)", m.achieved_ratio === undefined ? dash : percent(m.achieved_ratio, 2)],
    ["achieved ratio (whole model)", m.achieved_ratio_total === undefined ? dash : percent(m.achieved_ratio_total, 2)],
    ["peak memory", m.peak_memory_bytes ? bytes(m.peak_memory_bytes) : dash],
    ["device", m.device || dash],
    ["wall time", seconds(m.service ? m.service.wall_seconds : jobDuration(job))],
    ["attempts", String(job.attempts)],
  ];
  const protocol = m.protocol;
  if (protocol) facts.push(["evaluation", `${protocol.corpus}, ${protocol.windows} windows of ${protocol.seq_len} tokens, ${protocol.dtype}`]);
  return h("dl", { class: "facts wide", id: "summary" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** Flatten {a: {b: 1}} into [["a · b", "1"]], bytes and seconds by their names, for a facts list. */
export function flatFacts(value, prefix = "", out = []) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatFacts(v, prefix ? `${prefix} · ${k}` : k, out);
  } else if (value !== null && value !== undefined) {
    const shown = typeof value !== "number" ? (Array.isArray(value) ? value.join(", ") : String(value))
      : /bytes|memory/i.test(prefix) ? bytes(value) : /seconds/i.test(prefix) ? seconds(value) : num(value);
    out.push([prefix.replace(/_/g, " "), shown]);
  }
  return out;
}

function estimateView(job) {
  const estimate = job.estimate;
  const facts = [];
  if (estimate.params !== undefined) facts.push(["parameters", num(estimate.params)]);
  if (estimate.weights_bytes !== undefined) facts.push(["weights", bytes(estimate.weights_bytes)]);
  if (estimate.device) facts.push(["device", estimate.device]);
  if (estimate.chosen !== undefined) facts.push(["execution chosen", estimate.chosen || "none fits the limits"]);
  if (estimate.device_limit) facts.push(["device memory limit", bytes(estimate.device_limit)]);
  if (estimate.host_limit) facts.push(["host memory limit", bytes(estimate.host_limit)]);
  const measured = (job.metrics || {}).peak_memory_bytes;
  if (measured) facts.push(["measured peak memory", bytes(measured)]);
  const modes = Array.isArray(estimate.modes) ? estimate.modes : [];
  // Anything else the server puts in the estimate, flattened, so nothing it says is hidden.
  const known = new Set(["params", "weights_bytes", "device", "chosen", "device_limit", "host_limit", "modes",
    "stage_seconds", "version"]);
  const rest = flatFacts(Object.fromEntries(Object.entries(estimate).filter(([k]) => !known.has(k))));
  return h("div", { id: "estimate" }, h("h3", {}, "Preflight estimate"),
    h("p", { class: "muted" }, "Computed from the model's config.json when the job was submitted, before any weight was read."),
    h("dl", { class: "facts wide" }, [...facts, ...rest].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    modes.length ? h("table", { class: "compact", id: "estimate-modes" },
      h("thead", {}, h("tr", {}, h("th", {}, "execution"), ["device memory", "host memory", "disk", "time"]
        .map((t) => h("th", { class: "num" }, t)))),
      h("tbody", {}, modes.map((m) => h("tr", { class: m.mode === estimate.chosen ? "chosen" : "", dataset: { mode: m.mode } },
        h("td", {}, m.offload ? `${m.mode} (offload ${m.offload})` : String(m.mode), m.mode === estimate.chosen ? " ✓" : ""),
        h("td", { class: "num" }, bytes(m.device_bytes)), h("td", { class: "num" }, bytes(m.host_bytes)),
        h("td", { class: "num" }, bytes(m.disk_bytes)), h("td", { class: "num" }, seconds(m.seconds)))))) : null);
}

function charts(job) {
  const m = job.metrics || {};
  const details = m.method_details || {};
  const out = [];
  const expected = (job.estimate || {}).stage_seconds || {};
  if (m.seconds && Object.keys(m.seconds).length) {
    const withEstimate = Object.keys(expected).length > 0;
    out.push(h("figure", { id: "chart-stages" },
      h("figcaption", {}, withEstimate ? "Time per stage: measured (bar) and estimated (outline)" : "Time per stage"),
      barChart(Object.entries(m.seconds).map(([label, value]) => ({ label, value, display: seconds(value),
        compare: typeof expected[label] === "number" ? expected[label] : undefined,
        compareDisplay: typeof expected[label] === "number" ? seconds(expected[label]) : undefined })))));
  }
  if (details.ranks && Object.keys(details.ranks).length) {
    out.push(h("figure", { id: "chart-ranks" },
      h("figcaption", {}, "Kept rank per matrix", details.break_even_ranks ? " (shade: share of the break-even rank)" : ""),
      rankHeatmap(details.ranks, { breakEven: details.break_even_ranks, fullRanks: details.full_ranks })));
  }
  const removed = details.removed_layers || [];
  const replaced = job.method === "grasp" ? details.layers || [] : [];
  const influence = details.block_influence || [];
  if (removed.length || replaced.length || influence.length) {
    const count = Math.max(influence.length, ...removed.map((i) => i + 1), ...replaced.map((i) => i + 1));
    out.push(h("figure", { id: "chart-layers" },
      h("figcaption", {}, removed.length ? `Removed layers: ${removed.join(", ")}` : `Replaced layers: ${replaced.join(", ")}`),
      layerChart(count, { influence, removed, replaced })));
  }
  if (!out.length) {
    out.push(h("p", { class: "muted" }, job.status === "succeeded"
      ? "This job recorded no per-matrix or per-layer details." : "Charts appear when the job has succeeded."));
  }
  return out;
}

function eventRow(e) {
  return h("tr", { dataset: { kind: e.kind } }, h("td", { class: "nowrap" }, time(e.at)),
    h("td", {}, h("span", { class: `kind kind-${e.kind}` }, e.kind)), h("td", {}, e.message));
}

function artifactRow(a) {
  const href = safeHref(a.url);
  return h("tr", {}, h("td", {}, href ? h("a", { href, download: a.name.split("/").pop(), class: "download" }, a.name) : a.name),
    h("td", { class: "num" }, bytes(a.size)), h("td", { class: "mono hash" }, a.sha256));
}

export function mountJob(root, jobId) {
  const conditional = new Conditional();
  const header = h("div", { class: "toolbar" });
  const error = h("p", { class: "error", role: "alert", id: "job-error" });
  const progress = h("section", { class: "card", id: "progress" });
  const results = h("section", { class: "card", id: "results" });
  const chartBox = h("section", { class: "card charts", id: "charts" });
  const eventsBody = h("tbody");
  const artifacts = h("section", { class: "card", id: "downloads" });
  const specBox = h("pre", { class: "spec" });
  const seenEvents = new Set();
  let lastEvent = 0;
  let job = null;
  let finalRendered = false;
  let lastStep = null;  // data of the latest progress event: may say which layer

  async function cancel(button) {
    button.disabled = true;
    try {
      await request(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
    } catch (exc) {
      error.textContent = `Cancel failed: ${exc.message}`;
      button.disabled = false;
      return;
    }
    await refreshJob().catch(() => {});  // the live updates show it otherwise
  }

  function renderHeader() {
    const cancellable = !TERMINAL.has(job.status);
    const cancelButton = cancellable ? h("button", { type: "button", id: "cancel-job", class: "danger",
      disabled: job.cancel_requested }, job.cancel_requested ? "Cancelling…" : "Cancel job") : null;
    if (cancelButton) cancelButton.addEventListener("click", () => cancel(cancelButton));
    fill(header,
      h("div", {},
        h("h1", { id: "job-title" }, h("span", { class: "model" }, job.model), " · ", job.method, " · ", percent(job.target_ratio, 0)),
        h("p", { class: "muted" }, h("span", { class: "mono", id: "job-id" }, job.id), " · submitted ", time(job.created_at))),
      h("div", { class: "actions" }, h("span", { id: "job-status" }, statusBadge(job.status)), cancelButton));
  }

  async function downloadArchive(button, note) {
    // The archive route wants the API key, which a plain link cannot send: fetch it, then hand the
    // bytes to the browser as a file. (For large models the curl line below streams to disk instead.)
    button.disabled = true;
    note.textContent = "downloading…";
    try {
      const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/archive`,
        { headers: { "X-API-Key": auth.key() }, cache: "no-store", credentials: "omit" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const url = URL.createObjectURL(await response.blob());
      const link = h("a", { href: url, download: `spectra-${jobId}.tar` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      note.textContent = "";
    } catch (exc) {
      note.textContent = `Download failed: ${exc.message}`;
    } finally {
      button.disabled = false;
    }
  }

  function archiveBlock() {
    const note = h("span", { class: "muted", id: "archive-note" });
    const button = h("button", { type: "button", id: "download-archive" }, "Download the whole artifact (.tar)");
    button.addEventListener("click", () => downloadArchive(button, note));
    const archive = (job.metrics || {}).archive || {};
    return h("div", { class: "archive" }, button, " ", note,
      archive.sha256 ? h("p", { class: "muted" }, "sha256 ", h("span", { class: "mono" }, archive.sha256)) : null,
      h("p", { class: "muted" }, "Or: ", h("code", {}, `curl -fOJ -H "X-API-Key: $KEY" ${window.location.origin}/v1/jobs/${jobId}/archive`)));
  }

  async function loadArtifacts() {
    try {
      const { data } = await request(`/v1/jobs/${encodeURIComponent(jobId)}/artifacts`);
      fill(artifacts, h("h2", {}, "Download"), data.length ? archiveBlock() : null,
        data.length ? h("table", { class: "artifacts", id: "artifacts" },
          h("thead", {}, h("tr", {}, h("th", {}, "file"), h("th", {}, "size"), h("th", {}, "sha256"))),
          h("tbody", {}, data.map(artifactRow)))
          : h("p", { class: "muted" }, "No files."),
        data.length ? h("p", { class: "muted" }, `Links expire after ${seconds(data[0].expires_in)}; reload the page for new ones.`) : null);
    } catch (exc) {
      fill(artifacts, h("h2", {}, "Download"), h("p", { class: "error" }, `Could not list files: ${exc.message}`));
    }
  }

  function renderBody() {
    fill(progress, h("h2", {}, "Progress"), progressView(job, lastStep));
    const m = job.metrics || {};
    fill(results, h("h2", {}, "Results"), summary(job), job.metrics ? beforeAfter(m) : h("p", { class: "muted" }, "No metrics yet."),
      job.estimate ? estimateView(job) : null);
    fill(chartBox, h("h2", {}, "Charts"), charts(job));
    specBox.textContent = JSON.stringify(job.spec, null, 2);
  }

  function addEvent(e) {
    if (seenEvents.has(e.id)) return;
    seenEvents.add(e.id);
    if ((e.kind === "progress" || e.kind === "stage") && e.data && typeof e.data === "object") lastStep = e.data;
    lastEvent = Math.max(lastEvent, e.id);
    eventsBody.append(eventRow(e));
  }

  async function loadEvents() {
    const { data } = await request(`/v1/jobs/${encodeURIComponent(jobId)}/events?after=${lastEvent}`);
    data.forEach(addEvent);
  }

  /** Render the job; true while it can still change. */
  async function show(next, changed) {
    job = next;
    if (changed || !TERMINAL.has(job.status)) {
      renderHeader();
      renderBody();
    }
    error.textContent = job.error ? `${job.error.code || "error"}: ${job.error.message || ""}` : "";
    if (!TERMINAL.has(job.status)) return true;
    if (!finalRendered) {
      finalRendered = true;
      await loadEvents().catch(() => {});  // the last events, in case the stream ended before them
      if (job.status === "succeeded") await loadArtifacts();
      else fill(artifacts, h("h2", {}, "Download"), h("p", { class: "muted" }, `No files: the job ${job.status}.`));
    }
    return false;
  }

  /** GET the job (a 304 when nothing changed); true while it can still change, null when it is gone. */
  async function refreshJob() {
    try {
      const { data, changed } = await conditional.get(`/v1/jobs/${encodeURIComponent(jobId)}`);
      return await show(data, changed);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 404) {
        fill(root, h("section", { class: "card" }, h("h1", {}, "Job not found"),
          h("p", {}, "No job ", h("code", {}, jobId), " for this API key."), h("a", { href: "#/jobs" }, "Back to the jobs")));
        return null;
      }
      error.textContent = `Could not load the job: ${exc.message}`;
      throw exc;  // so that poll() backs off
    }
  }

  // Live updates: the job's Server-Sent Events stream where the server has one (each event is
  // logged at once and triggers a conditional GET of the job), else polling every second.
  let stopped = false;
  let stopPolling = () => {};
  const aborter = new AbortController();
  let pending = null;
  function refreshSoon() {
    if (pending === null) pending = setTimeout(() => { pending = null; if (!stopped) refreshJob().catch(() => {}); }, 250);
  }
  function onMessage(message) {
    const data = JSON.parse(message.data);
    if (message.event === "job") show(data, true);  // the final state, metrics included
    else { addEvent(data); refreshSoon(); }
  }
  function startPolling() {
    stopPolling = poll(async () => {
      const live = await refreshJob();
      if (live) await loadEvents().catch(() => {});
      return live === true;
    }, 1000);
  }
  async function follow() {
    let failures = 0;
    while (!stopped) {
      try {
        const outcome = await followStream(`/v1/jobs/${encodeURIComponent(jobId)}/events`,
          { lastId: lastEvent, onMessage, signal: aborter.signal });
        if (outcome === "unsupported") return startPolling();
        failures = 0;
      } catch (exc) {
        if (stopped) return;
        failures += 1;
        if (failures >= 3) return startPolling();  // the stream keeps failing (a proxy?): poll instead
      }
      const live = await refreshJob().catch(() => true);  // a failed GET: try the stream again
      if (stopped || live !== true) return;  // ended because the job finished
      await new Promise((resolve) => setTimeout(resolve, 2000));  // then resume after lastEvent
    }
  }

  root.append(
    h("section", { class: "card" }, header, error),
    progress, results, chartBox, artifacts,
    h("section", { class: "card", id: "events" }, h("h2", {}, "Event log"),
      h("table", { class: "events" }, h("thead", {}, h("tr", {}, h("th", {}, "time"), h("th", {}, "kind"), h("th", {}, "message"))), eventsBody)),
    h("section", { class: "card" }, h("details", {}, h("summary", {}, "Job spec (JSON)"), specBox)),
  );
  refreshJob().then((live) => {
    if (live === true && !stopped) follow();
    else if (live === false) loadEvents().catch(() => {});
  }, () => { if (!stopped) startPolling(); });
  return () => {
    stopped = true;
    aborter.abort();
    stopPolling();
    clearTimeout(pending);
  };
}
