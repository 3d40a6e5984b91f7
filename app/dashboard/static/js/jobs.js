// The jobs table: filters (status and method by the API, model on the shown page), cursor paging,
// refreshed every 2 s with conditional GETs.

import { Conditional, request } from "./api.js";
import { fill, h } from "./dom.js";
import { dash, jobDuration, num, percent, seconds, time } from "./format.js";
import { poll } from "./poll.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const PAGE_SIZES = [10, 25, 50, 100];

export function statusBadge(status) {
  return h("span", { class: `status status-${STATUSES.includes(status) ? status : "other"}` }, status);
}

function row(job) {
  const m = job.metrics || {};
  return h("tr", { dataset: { job: job.id, status: job.status } },
    h("td", {}, statusBadge(job.status)),
    h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id.slice(0, 8))),
    h("td", { class: "model" }, job.model),
    h("td", {}, job.method),
    h("td", { class: "num" }, percent(job.target_ratio)),
    h("td", { class: "num" }, m.achieved_ratio === undefined ? dash : percent(m.achieved_ratio, 2)),
    h("td", { class: "num" }, num(m.ppl_before)),
    h("td", { class: "num" }, num(m.ppl_after)),
    h("td", { class: "num" }, seconds(jobDuration(job))),
    h("td", {}, time(job.created_at)),
  );
}

export function mountJobs(root, query) {
  const state = {
    status: query.get("status") || "", method: query.get("method") || "", model: query.get("model") || "",
    limit: Number(query.get("limit")) || 25, cursors: [null],
  };
  const conditional = new Conditional();
  const body = h("tbody");
  const pageInfo = h("span", { class: "muted", id: "page-info" });
  const prev = h("button", { type: "button", id: "prev-page", disabled: true }, "← Newer");
  const next = h("button", { type: "button", id: "next-page", disabled: true }, "Older →");
  const statusSelect = h("select", { id: "filter-status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((v) => h("option", { value: v, selected: v === state.status }, v)));
  const methodSelect = h("select", { id: "filter-method" }, h("option", { value: "" }, "any method"));
  const modelInput = h("input", { id: "filter-model", type: "search", placeholder: "model contains…", value: state.model });
  const sizeSelect = h("select", { id: "page-size" },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.limit }, `${n} per page`)));
  const error = h("p", { class: "error", role: "alert" });
  let nextCursor = null;
  let lastItems = [];

  request("/v1/methods").then(({ data }) => {
    for (const m of data) methodSelect.append(h("option", { value: m.name, selected: m.name === state.method }, m.name));
  }).catch(() => {});

  function path() {
    // List items carry metrics (ratios, perplexities) only when asked for.
    const params = new URLSearchParams({ limit: String(state.limit), include: "metrics" });
    if (state.status) params.set("status", state.status);
    if (state.method) params.set("method", state.method);
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    return `/v1/jobs?${params}`;
  }

  function render() {
    const needle = state.model.toLowerCase();
    const shown = needle ? lastItems.filter((j) => j.model.toLowerCase().includes(needle)) : lastItems;
    fill(body, shown.length ? shown.map(row)
      : h("tr", {}, h("td", { colspan: 10, class: "muted empty" }, "No jobs here. Submit one from the Submit page.")));
    prev.disabled = state.cursors.length <= 1;
    next.disabled = !nextCursor;
    pageInfo.textContent = `page ${state.cursors.length}, ${shown.length} job${shown.length === 1 ? "" : "s"} shown`;
  }

  async function refresh() {
    try {
      // On a 304 this is the body kept for this very URL (this page, these filters).
      const { data } = await conditional.get(path());
      error.textContent = "";
      lastItems = data.items;
      nextCursor = data.next_cursor;
      render();  // also when unchanged: running durations move on
    } catch (exc) {
      error.textContent = `Could not load jobs: ${exc.message}`;
      throw exc;  // so that poll() backs off
    }
  }

  let stop = poll(refresh, 2000);
  function restart() {
    stop();
    stop = poll(refresh, 2000);
  }
  function refilter() {
    state.cursors = [null];
    const params = new URLSearchParams();
    for (const k of ["status", "method", "model"]) if (state[k]) params.set(k, state[k]);
    if (state.limit !== 25) params.set("limit", String(state.limit));
    history.replaceState(null, "", `#/jobs${params.toString() ? `?${params}` : ""}`);
    restart();
  }
  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; refilter(); });
  methodSelect.addEventListener("change", () => { state.method = methodSelect.value; refilter(); });
  sizeSelect.addEventListener("change", () => { state.limit = Number(sizeSelect.value); refilter(); });
  modelInput.addEventListener("input", () => { state.model = modelInput.value; render(); });
  next.addEventListener("click", () => { if (nextCursor) { state.cursors.push(nextCursor); restart(); } });
  prev.addEventListener("click", () => { if (state.cursors.length > 1) { state.cursors.pop(); restart(); } });

  root.append(
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h1", {}, "Jobs"), h("a", { href: "#/submit", class: "button" }, "New job")),
      h("div", { class: "filters" }, statusSelect, methodSelect, modelInput, sizeSelect),
      error,
      h("table", { class: "jobs", id: "jobs-table" },
        h("thead", {}, h("tr", {}, ["status", "job", "model", "method"].map((t) => h("th", {}, t)),
          ["target", "achieved", "ppl before", "ppl after", "duration"].map((t) => h("th", { class: "num" }, t)),
          h("th", {}, "created"))),
        body),
      h("div", { class: "pager" }, prev, pageInfo, next)),
  );
  return () => stop();
}
