// Form fields generated from JSON Schema (what GET /v1/methods and /openapi.json publish): every
// property becomes a labelled input with its description and bounds. A field left empty is not
// sent, so the server's default applies; the placeholder says what that default is.

import { h } from "./dom.js";

function resolve(schema, defs) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve(defs[name] || {}, defs);
  }
  return schema || {};
}

/** {schema, nullable}: the non-null branch of an `anyOf: [X, {type: null}]`. */
function unwrap(schema, defs) {
  const s = resolve(schema, defs);
  if (Array.isArray(s.anyOf)) {
    const branches = s.anyOf.map((b) => resolve(b, defs));
    const real = branches.filter((b) => b.type !== "null");
    if (real.length === 1) {
      return { schema: { ...real[0], default: s.default, description: s.description, title: s.title }, nullable: true };
    }
  }
  return { schema: s, nullable: false };
}

function bounds(s) {
  const parts = [];
  if (s.minimum !== undefined) parts.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) parts.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined) parts.push(`≤ ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) parts.push(`< ${s.exclusiveMaximum}`);
  if (s.minItems !== undefined) parts.push(`at least ${s.minItems}`);
  return parts.join(", ");
}

function idFor(path) {
  return `f-${path.replace(/[^A-Za-z0-9_]/g, "-")}`;
}

export function errorSlot(path) {
  return h("span", { class: "field-error", role: "alert", dataset: { errorFor: path } });
}

function describe(name, s, nullable, path, control, required) {
  const facts = [];
  if (s.default !== undefined && s.default !== null && !Array.isArray(s.default)) facts.push(`default ${s.default}`);
  if (nullable && s.default === null) facts.push("default: none");
  const b = bounds(s);
  if (b) facts.push(b);
  return h("div", { class: "field", dataset: { field: path } },
    h("label", { for: idFor(path) }, s.title || name, required ? h("span", { class: "required" }, " *") : null),
    control,
    s.description ? h("p", { class: "help" }, s.description) : null,
    facts.length ? h("p", { class: "bounds" }, facts.join(" · ")) : null,
    errorSlot(path));
}

/** One input for a schema property: {el, read()} where read() is undefined when left unset. */
export function schemaField(name, rawSchema, defs, path, { required = false, initial } = {}) {
  const { schema: s, nullable } = unwrap(rawSchema, defs);
  const id = idFor(path);
  if (s.type === "object" && s.properties) {
    const legend = name.charAt(0).toUpperCase() + name.slice(1).replace(/_/g, " ");  // not the class name
    return objectFields(s, defs, path, { legend, description: s.description });
  }
  if (Array.isArray(s.enum) && s.type !== "array") {
    const select = h("select", { id, name: path },
      required ? null : h("option", { value: "" }, s.default !== undefined ? `default (${s.default})` : "not set"),
      s.enum.map((v) => h("option", { value: String(v), selected: initial === v }, String(v))));
    return { el: describe(name, s, nullable, path, select, required), read: () => (select.value === "" ? undefined : select.value) };
  }
  if (s.type === "boolean") {
    const box = h("input", { id, name: path, type: "checkbox", checked: initial ?? s.default === true });
    const start = box.checked;
    return { el: describe(name, s, nullable, path, box, required), read: () => (box.checked === start && initial === undefined ? undefined : box.checked) };
  }
  if (s.type === "array" && s.items && Array.isArray(resolve(s.items, defs).enum)) {
    const choices = resolve(s.items, defs).enum;
    const boxes = choices.map((v) => h("input", { type: "checkbox", value: v, id: `${id}-${v}`, name: path }));
    const group = h("div", { class: "choices", id },
      boxes.map((box, i) => h("label", { class: "choice" }, box, ` ${choices[i]}`)),
      h("span", { class: "muted" }, " (none ticked: the method's default)"));
    return { el: describe(name, s, nullable, path, group, required),
      read: () => { const on = boxes.filter((b) => b.checked).map((b) => b.value); return on.length ? on : undefined; } };
  }
  if (s.type === "array") {
    const input = h("input", { id, name: path, type: "text", placeholder: "comma-separated, e.g. 3, 4, 5" });
    const itemType = resolve(s.items, defs).type;
    return { el: describe(name, s, nullable, path, input, required), read: () => {
      const text = input.value.trim();
      if (!text) return undefined;
      if (nullable && text.toLowerCase() === "none") return null;
      return text.split(/[\s,]+/).filter(Boolean).map((v) => (itemType === "integer" || itemType === "number" ? Number(v) : v));
    } };
  }
  const numeric = s.type === "integer" || s.type === "number";
  const input = h("input", { id, name: path, type: numeric ? "number" : "text", required,
    step: s.type === "integer" ? 1 : numeric ? "any" : null,
    min: s.minimum ?? s.exclusiveMinimum ?? null, max: s.maximum ?? s.exclusiveMaximum ?? null,
    placeholder: s.default !== undefined && s.default !== null ? String(s.default) + (nullable ? " (or none)" : "")
      : nullable ? "none" : "", value: initial ?? null });
  if (nullable && numeric) input.type = "text";  // so that "none" can be typed
  return { el: describe(name, s, nullable, path, input, required), read: () => {
    const text = input.value.trim();
    if (text === "") return undefined;
    if (nullable && text.toLowerCase() === "none") return null;
    // Sent as typed when it is not a number: the API's 422 then says what is wrong with it.
    return numeric && text !== "" && !Number.isNaN(Number(text)) ? Number(text) : text;
  } };
}

/** A fieldset of an object schema's properties; read() gives only the properties that were set. */
export function objectFields(schema, defs, path, { legend, description, skip = [], initial = {} } = {}) {
  const s = resolve(schema, defs);
  const required = new Set(s.required || []);
  const fields = Object.entries(s.properties || {}).filter(([name]) => !skip.includes(name))
    .map(([name, prop]) => [name, schemaField(name, prop, defs, path ? `${path}.${name}` : name,
      { required: required.has(name), initial: initial[name] })]);
  const el = h("fieldset", { class: "group", dataset: { field: path } },
    legend ? h("legend", {}, legend) : null,
    description ? h("p", { class: "help" }, description) : null,
    path ? errorSlot(path) : null,
    fields.map(([, f]) => f.el),
    fields.length ? null : h("p", { class: "muted" }, "No options."));
  return { el, read: () => {
    const out = {};
    for (const [name, f] of fields) {
      const v = f.read();
      if (v !== undefined) out[name] = v;
    }
    return Object.keys(out).length ? out : undefined;
  } };
}
