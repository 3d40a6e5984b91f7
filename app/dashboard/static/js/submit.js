// The submit form: the job's fields from the OpenAPI JobSpec schema, the method's options from
// GET /v1/methods, the API's 422 messages placed beside the fields they name.

import { ApiError, idempotencyKey, request } from "./api.js";
import { fill, h, safeHref } from "./dom.js";
import { datasetPicker } from "./datasets.js";
import { errorSlot, objectFields, schemaField } from "./schemaform.js";

/** "options.recovery.epochs: msg; options.alpha: msg" inside one options error -> [[path, msg]]. */
function splitOptionErrors(message) {
  const found = [];
  const pattern = /(options(?:\.[A-Za-z0-9_]+)+): (.*?)(?=; options\.|$)/g;
  let match;
  while ((match = pattern.exec(message)) !== null) found.push([match[1], match[2]]);
  return found;
}

function cleanMessage(msg) {
  return String(msg).replace(/^Value error, /, "");
}

export function mountSubmit(root) {
  let stopped = false;
  const box = h("section", { class: "card" }, h("h1", {}, "New job"), h("p", { class: "muted" }, "Loading the methods…"));
  root.append(box);
  Promise.all([request("/v1/methods"), request("/openapi.json")]).then(([methods, openapi]) => {
    if (!stopped) build(box, methods.data, openapi.data.components.schemas);
  }).catch((exc) => {
    fill(box, h("h1", {}, "New job"), h("p", { class: "error" }, `Could not load the form: ${exc.message}`));
  });
  return () => { stopped = true; };
}

function build(box, methods, defs) {
  const job = defs.JobSpec;
  const main = objectFields(job, defs, "", {
    skip: ["method", "options", "calibration", "evaluation", "export", "execution", "device", "dtype", "seed"] });
  const methodSelect = h("select", { id: "f-method", name: "method", required: true },
    methods.map((m) => h("option", { value: m.name }, m.name)));
  const methodInfo = h("p", { class: "help", id: "method-summary" });
  const optionsBox = h("div", { id: "options-box" });
  let options = null;

  function showMethod() {
    const m = methods.find((x) => x.name === methodSelect.value);
    const paper = m.paper ? safeHref(m.paper) : null;
    fill(methodInfo, m.summary, paper ? " · " : "", paper ? h("a", { href: paper, target: "_blank", rel: "noopener noreferrer" }, "paper") : "",
      m.requires_calibration ? " · uses calibration data" : " · needs no calibration data");
    options = objectFields(m.options_schema, m.options_schema.$defs || {}, "options",
      { legend: `Options of ${m.name}`, description: m.options_schema.description });
    fill(optionsBox, options.el);
  }
  methodSelect.addEventListener("change", showMethod);

  const calibration = objectFields(defs.CalibrationSpec, defs, "calibration",
    { legend: "Calibration data", description: defs.CalibrationSpec.description });
  const evaluation = objectFields(defs.EvaluationSpec, defs, "evaluation",
    { legend: "Evaluation (perplexity before and after)", description: defs.EvaluationSpec.description });
  const exporting = objectFields(defs.ExportSpec, defs, "export", { legend: "Export" });
  // Servers that know how a job runs (resident or layer by layer) publish ExecutionSpec too.
  const execution = job.properties.execution
    ? schemaField("execution", job.properties.execution, defs, "execution") : null;
  const advanced = ["device", "dtype", "seed"].map((name) => [name, schemaField(name, job.properties[name], defs, name)]);

  // Servers that take uploaded datasets list "dataset" among the calibration sources.
  const sources = defs.CalibrationSpec.properties.source.enum || [];
  const datasets = sources.includes("dataset") ? datasetPicker((id) => {
    const source = form.querySelector("#f-calibration-source");
    source.value = "dataset";
    form.querySelector("#f-calibration-dataset_id").value = id;
    source.scrollIntoView({ block: "center" });
  }) : null;

  const summaryErrors = h("div", { class: "error", id: "form-errors", role: "alert" });
  const submit = h("button", { type: "submit", id: "submit-job" }, "Submit job");
  const form = h("form", { id: "submit-form", novalidate: true },
    main.el,
    h("div", { class: "field", dataset: { field: "method" } }, h("label", { for: "f-method" }, "Method ", h("span", { class: "required" }, "*")),
      methodSelect, methodInfo, errorSlot("method")),
    optionsBox, calibration.el, datasets, evaluation.el, exporting.el, execution ? execution.el : null,
    h("fieldset", { class: "group", dataset: { field: "advanced" } }, h("legend", {}, "Advanced"), advanced.map(([, f]) => f.el)),
    summaryErrors, submit);
  showMethod();

  function body() {
    const out = { ...(main.read() || {}), method: methodSelect.value };
    const opts = options.read();
    if (opts) out.options = opts;
    for (const [name, part] of [["calibration", calibration], ["evaluation", evaluation], ["export", exporting],
      ["execution", execution]]) {
      const v = part ? part.read() : undefined;
      if (v) out[name] = v;
    }
    for (const [name, f] of advanced) {
      const v = f.read();
      if (v !== undefined) out[name] = v;
    }
    return out;
  }

  function clearErrors() {
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
    summaryErrors.replaceChildren();
  }

  function place(path, message) {
    const slot = form.querySelector(`.field-error[data-error-for="${CSS.escape(path)}"]`);
    if (!slot) return false;
    slot.textContent = slot.textContent ? `${slot.textContent}; ${message}` : message;
    slot.closest("[data-field]")?.classList.add("invalid");
    return true;
  }

  function showErrors(detail) {
    const unplaced = [];
    const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
    for (const err of items) {
      const loc = (err.loc || []).filter((p) => p !== "body");
      const path = loc.join(".");
      const message = cleanMessage(err.msg);
      const inOptions = path === "options" ? splitOptionErrors(message) : [];
      if (inOptions.length) {
        for (const [p, m] of inOptions) if (!place(p, m)) unplaced.push(`${p}: ${m}`);
      } else if (!path || !place(path, message)) {
        unplaced.push(path ? `${path}: ${message}` : message);
      }
    }
    fill(summaryErrors, unplaced.length ? h("ul", {}, unplaced.map((m) => h("li", {}, m))) : null);
    form.querySelector(".invalid")?.scrollIntoView({ block: "center" });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    submit.disabled = true;
    try {
      const { data } = await request("/v1/jobs", { method: "POST", body: body(),
        headers: { "Idempotency-Key": idempotencyKey() } });
      window.location.hash = `#/jobs/${encodeURIComponent(data.id)}`;
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 422) showErrors(exc.detail);
      else fill(summaryErrors, `The job was not submitted: ${exc.message}`);
    } finally {
      submit.disabled = false;
    }
  });
  fill(box, h("h1", {}, "New job"),
    h("p", { class: "muted" }, "Every field comes from the API's schemas; empty fields use the defaults shown."), form);
}
