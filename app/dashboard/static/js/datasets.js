// The tenant's uploaded datasets beside the calibration fields: upload a .txt / .jsonl / .parquet
// (POST /v1/datasets) and pick one, which sets calibration.source = "dataset" and its id.

import { request, upload } from "./api.js";
import { fill, h } from "./dom.js";
import { bytes, num } from "./format.js";

function problemText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return detail && detail.message ? detail.message : JSON.stringify(detail);
}

/** A box that lists and uploads datasets; use(id) is called when one is picked. */
export function datasetPicker(use) {
  const list = h("div", { id: "datasets-list" });
  const file = h("input", { type: "file", id: "dataset-file", accept: ".txt,.jsonl,.parquet" });
  const button = h("button", { type: "button", id: "dataset-upload" }, "Upload");
  const status = h("span", { class: "muted", id: "dataset-status", role: "status" });

  async function refresh() {
    const { data } = await request("/v1/datasets");
    fill(list, data.length ? h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, ["name", "records", "size", "id", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.map((d) => {
        const pick = h("button", { type: "button", class: "small" }, "Use for calibration");
        pick.addEventListener("click", () => use(d.id));
        return h("tr", { dataset: { dataset: d.id } }, h("td", {}, d.name), h("td", { class: "num" }, num(d.records)),
          h("td", { class: "num" }, bytes(d.size)), h("td", { class: "mono" }, d.id), h("td", {}, pick));
      })))
      : h("p", { class: "muted" }, "No datasets uploaded yet."));
  }

  button.addEventListener("click", async () => {
    if (!file.files.length) { status.textContent = "Choose a file first."; return; }
    button.disabled = true;
    status.textContent = "uploading…";
    try {
      const dataset = await upload("/v1/datasets", file.files[0]);
      status.textContent = `uploaded ${dataset.name}: ${num(dataset.records)} records`;
      file.value = "";
      await refresh();
      use(dataset.id);
    } catch (exc) {
      status.textContent = `Upload refused: ${problemText(exc.detail ?? exc.message)}`;
    } finally {
      button.disabled = false;
    }
  });
  refresh().catch((exc) => fill(list, h("p", { class: "error" }, `Could not list datasets: ${exc.message}`)));
  return h("fieldset", { class: "group", id: "datasets" }, h("legend", {}, "Your calibration datasets"),
    h("p", { class: "help" }, "Upload UTF-8 text (.txt), JSON lines with a 'text' field (.jsonl) or Parquet with a text column."),
    h("div", { class: "filters" }, file, button, status), list);
}
