// Compare: succeeded jobs of one model, perplexity after compression against the achieved ratio,
// one series per method (and zero-shot accuracy the same way when jobs recorded it).

import { request } from "./api.js";
import { scatterChart } from "./charts.js";
import { fill, h } from "./dom.js";
import { num, percent } from "./format.js";

const MAX_JOBS = 1000;

async function succeededJobs() {
  const jobs = [];
  let cursor = null;
  do {
    const params = new URLSearchParams({ status: "succeeded", limit: "200", include: "metrics" });
    if (cursor) params.set("cursor", cursor);
    const { data } = await request(`/v1/jobs?${params}`);
    jobs.push(...data.items);
    cursor = data.next_cursor;
  } while (cursor && jobs.length < MAX_JOBS);
  return jobs;
}

/** Mean zero-shot accuracy of a job, from any metrics entry named like zero-shot (per task numbers or {acc}). */
export function zeroShot(metrics) {
  for (const [key, value] of Object.entries(metrics || {})) {
    if (!/zero.?shot/i.test(key) || !value || typeof value !== "object") continue;
    const source = value.after && typeof value.after === "object" ? value.after : value;
    const accs = Object.values(source).map((v) => (typeof v === "number" ? v : v && typeof v.acc === "number" ? v.acc : null))
      .filter((v) => v !== null);
    if (accs.length) return accs.reduce((a, b) => a + b, 0) / accs.length;
  }
  return null;
}

function series(jobs, value) {
  const byMethod = new Map();
  for (const job of jobs) {
    const y = value(job);
    const x = job.metrics?.achieved_ratio;
    if (typeof y !== "number" || typeof x !== "number") continue;
    if (!byMethod.has(job.method)) byMethod.set(job.method, []);
    byMethod.get(job.method).push({ x, y, id: job.id, label: job.id.slice(0, 8) });
  }
  return [...byMethod.entries()].sort().map(([name, points]) => ({ name, points }));
}

export function mountCompare(root, query) {
  let stopped = false;
  const box = h("section", { class: "card" }, h("h1", {}, "Compare"), h("p", { class: "muted" }, "Loading succeeded jobs…"));
  root.append(box);
  succeededJobs().then((jobs) => { if (!stopped) build(box, jobs, query.get("model")); })
    .catch((exc) => fill(box, h("h1", {}, "Compare"), h("p", { class: "error" }, `Could not load jobs: ${exc.message}`)));
  return () => { stopped = true; };
}

function build(box, jobs, wanted) {
  const models = [...new Set(jobs.map((j) => j.model))].sort();
  if (!models.length) {
    fill(box, h("h1", {}, "Compare"), h("p", { class: "muted" }, "No succeeded jobs yet: submit a few at different ratios and methods."));
    return;
  }
  const modelSelect = h("select", { id: "compare-model" }, models.map((m) => h("option", { value: m, selected: m === wanted }, m)));
  const picker = h("div", { id: "compare-jobs" });
  const chartBox = h("div", { id: "compare-charts" });
  let picked = new Set();

  function ofModel() { return jobs.filter((j) => j.model === modelSelect.value); }

  function draw() {
    const chosen = ofModel().filter((j) => picked.has(j.id));
    const ppl = series(chosen, (j) => j.metrics?.ppl_after);
    const before = chosen.map((j) => j.metrics?.ppl_before).filter((v) => typeof v === "number");
    const parts = [];
    if (ppl.length) {
      parts.push(h("figure", { id: "chart-ppl" }, h("figcaption", {}, "Perplexity after compression vs achieved ratio (ringed: the Pareto front)"),
        scatterChart(ppl, { xLabel: "achieved ratio (decoder linear parameters removed)", yLabel: "perplexity",
          reference: before.length ? { y: Math.min(...before), label: `uncompressed ${num(Math.min(...before))}` } : null })));
    } else {
      parts.push(h("p", { class: "muted" }, "Pick jobs that recorded a perplexity to draw the chart."));
    }
    const acc = series(chosen, (j) => zeroShot(j.metrics));
    if (acc.length) {
      parts.push(h("figure", { id: "chart-zeroshot" }, h("figcaption", {}, "Mean zero-shot accuracy vs achieved ratio"),
        scatterChart(acc, { xLabel: "achieved ratio", yLabel: "accuracy", lowerIsBetter: false })));
    } else if (chosen.length) {
      parts.push(h("p", { class: "muted", id: "no-zeroshot" }, "None of these jobs recorded zero-shot accuracy."));
    }
    fill(chartBox, parts);
  }

  function listJobs() {
    const list = ofModel().sort((a, b) => a.method.localeCompare(b.method) || (a.metrics?.achieved_ratio ?? 0) - (b.metrics?.achieved_ratio ?? 0));
    picked = new Set(list.map((j) => j.id));
    fill(picker, h("table", { class: "jobs compact" },
      h("thead", {}, h("tr", {}, ["", "job", "method", "achieved", "ppl before", "ppl after"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.map((j) => {
        const box = h("input", { type: "checkbox", checked: true, value: j.id, "aria-label": `include ${j.id}` });
        box.addEventListener("change", () => { if (box.checked) picked.add(j.id); else picked.delete(j.id); draw(); });
        return h("tr", { dataset: { job: j.id } }, h("td", {}, box),
          h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: "mono" }, j.id.slice(0, 8))),
          h("td", {}, j.method), h("td", { class: "num" }, percent(j.metrics?.achieved_ratio, 2)),
          h("td", { class: "num" }, num(j.metrics?.ppl_before)), h("td", { class: "num" }, num(j.metrics?.ppl_after)));
      }))));
    draw();
  }
  modelSelect.addEventListener("change", () => {
    history.replaceState(null, "", `#/compare?model=${encodeURIComponent(modelSelect.value)}`);
    listJobs();
  });
  fill(box, h("h1", {}, "Compare"),
    h("div", { class: "filters" }, h("label", { for: "compare-model" }, "Model "), modelSelect),
    h("div", { class: "compare" }, chartBox, picker));
  listJobs();
}
