// Charts as inline SVG, drawn from the job's JSON. Every mark carries its number in a data-*
// attribute and a <title>, so what is drawn can be read back (tests do) and hovered.

import { s } from "./dom.js";
import { num, percent } from "./format.js";

export const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d"];

/**
 * Horizontal bars: [{label, value, display?, compare?}] with the value printed at each bar's end; a
 * `compare` value (an estimate) is drawn as an outline on the same scale.
 */
export function barChart(bars, { title, unit = "", width = 640, color = PALETTE[0] } = {}) {
  const row = 22;
  const labelWidth = 130;
  const height = bars.length * row + 10;
  const max = Math.max(...bars.map((b) => Math.max(b.value, b.compare ?? 0)), 1e-12);
  const withCompare = bars.some((b) => typeof b.compare === "number");
  const span = width - labelWidth - (withCompare ? 190 : 90);  // room for the printed values
  const svg = s("svg", { class: "chart bar-chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": title || "bar chart" });
  bars.forEach((bar, i) => {
    const y = 5 + i * row;
    const w = Math.max(1, (bar.value / max) * span);
    const shown = bar.display ?? `${num(bar.value)}${unit}`;
    if (typeof bar.compare === "number") {
      svg.append(s("rect", { x: labelWidth, y: y + 1, width: Math.max(1, (bar.compare / max) * span), height: row - 4,
        class: "bar-compare", fill: "none", dataset: { label: bar.label, compare: bar.compare } },
      s("title", {}, `${bar.label}: estimated ${num(bar.compare)}`)));
    }
    svg.append(
      s("text", { x: labelWidth - 6, y: y + 14, "text-anchor": "end", class: "label" }, bar.label),
      s("rect", { x: labelWidth, y: y + 2, width: w, height: row - 6, fill: color, class: "bar",
        dataset: { label: bar.label, value: bar.value } }, s("title", {}, `${bar.label}: ${shown}`)),
      s("text", { x: labelWidth + Math.max(w, typeof bar.compare === "number" ? (bar.compare / max) * span : 0) + 6,
        y: y + 14, class: "value" }, bar.compareDisplay ? `${shown} (est. ${bar.compareDisplay})` : shown),
    );
  });
  return svg;
}

/** Parse "model.layers.3.self_attn.q_proj" into {layer: 3, module: "q_proj"}. */
export function matrixPosition(name) {
  const match = /\.(\d+)\.(?:.*\.)?([^.]+)$/.exec(name);
  return match ? { layer: Number(match[1]), module: match[2] } : { layer: null, module: name };
}

/**
 * Kept rank of every factorized matrix: rows are module types, columns decoder layers, each cell
 * printed with its rank and shaded by rank / reference (the break-even rank when the job recorded
 * it, else the largest rank of any matrix, so that module types differ even where every layer keeps
 * the same ranks).
 */
export function rankHeatmap(ranks, { breakEven = {}, fullRanks = {} } = {}) {
  const cells = Object.entries(ranks).map(([name, rank]) => ({ name, rank, ...matrixPosition(name) }));
  const layers = [...new Set(cells.map((c) => c.layer))].sort((a, b) => a - b);
  const modules = [...new Set(cells.map((c) => c.module))];
  const maxRank = Math.max(1, ...cells.map((c) => c.rank));
  const cellW = Math.max(18, Math.min(64, Math.floor(760 / Math.max(layers.length, 1))));
  const cellH = 24;
  const left = 90;
  const top = 8;
  const width = left + layers.length * cellW + 10;
  const height = top + modules.length * cellH + 34;
  const svg = s("svg", { class: "chart rank-heatmap", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "kept rank per matrix" });
  modules.forEach((module, r) => {
    svg.append(s("text", { x: left - 6, y: top + r * cellH + 16, "text-anchor": "end", class: "label" }, module));
  });
  layers.forEach((layer, c) => {
    svg.append(s("text", { x: left + c * cellW + cellW / 2, y: top + modules.length * cellH + 16,
      "text-anchor": "middle", class: "label" }, layer === null ? "?" : String(layer)));
  });
  svg.append(s("text", { x: left + (layers.length * cellW) / 2, y: height - 4, "text-anchor": "middle",
    class: "axis-title" }, "decoder layer"));
  for (const cell of cells) {
    const r = modules.indexOf(cell.module);
    const c = layers.indexOf(cell.layer);
    const reference = breakEven[cell.name] || maxRank;
    const share = Math.max(0, Math.min(1, cell.rank / reference));
    const x = left + c * cellW;
    const y = top + r * cellH;
    const extra = [];
    if (fullRanks[cell.name]) extra.push(`full rank ${fullRanks[cell.name]}`);
    if (breakEven[cell.name]) extra.push(`break-even ${breakEven[cell.name]}`);
    svg.append(
      s("rect", { x: x + 1, y: y + 1, width: cellW - 2, height: cellH - 2, class: "cell",
        fill: `rgb(${Math.round(239 - 202 * share)}, ${Math.round(246 - 147 * share)}, ${Math.round(255 - 20 * share)})`,
        dataset: { matrix: cell.name, rank: cell.rank } },
      s("title", {}, `${cell.name}: rank ${cell.rank}${extra.length ? ` (${extra.join(", ")})` : ""}`)),
    );
    if (cellW >= 20) {
      svg.append(s("text", { x: x + cellW / 2, y: y + 16, "text-anchor": "middle",
        class: `cell-value${share > 0.55 ? " dark" : ""}${cellW < 30 ? " small" : ""}` }, String(cell.rank)));
    }
  }
  return svg;
}

/**
 * One bar per decoder layer (its Block Influence when recorded, else a unit bar), coloured by what
 * the method did to it: removed, replaced by a low-rank remnant, or kept.
 */
export function layerChart(layerCount, { influence = [], removed = [], replaced = [] } = {}) {
  const colW = Math.max(14, Math.min(48, Math.floor(760 / Math.max(layerCount, 1))));
  const plotH = 120;
  const left = 50;
  const width = Math.max(left + layerCount * colW + 10, 500);  // room for the legend
  const height = plotH + 60;
  const max = Math.max(...influence.filter(Number.isFinite), 1e-12);
  const svg = s("svg", { class: "chart layer-chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "decoder layers" });
  svg.append(s("text", { x: 4, y: 12, class: "axis-title" }, influence.length ? "Block Influence" : "layers"));
  for (let i = 0; i < layerCount; i += 1) {
    const state = removed.includes(i) ? "removed" : replaced.includes(i) ? "replaced" : "kept";
    const value = influence[i];
    const barH = Number.isFinite(value) ? Math.max(2, (value / max) * plotH) : plotH;
    const x = left + i * colW;
    svg.append(
      s("rect", { x: x + 2, y: 20 + plotH - barH, width: colW - 4, height: barH, class: `layer ${state}`,
        dataset: { layer: i, state, influence: Number.isFinite(value) ? value : "" } },
      s("title", {}, `layer ${i}: ${state}${Number.isFinite(value) ? `, Block Influence ${num(value, 4)}` : ""}`)),
      s("text", { x: x + colW / 2, y: 20 + plotH + 16, "text-anchor": "middle", class: "label" }, String(i)),
    );
  }
  const legend = [["kept", "kept"], ["replaced", "replaced (low-rank)"], ["removed", "removed"]];
  legend.forEach(([state, text], k) => {
    const x = left + k * 150;
    svg.append(s("rect", { x, y: height - 16, width: 12, height: 12, class: `layer ${state}` }),
      s("text", { x: x + 18, y: height - 6, class: "label" }, text));
  });
  return svg;
}

function ticks(min, max, count = 5) {
  const step = (max - min) / count;
  return Array.from({ length: count + 1 }, (_, i) => min + i * step);
}

/**
 * Scatter with one line per series: [{name, points: [{x, y, label, id}]}]. The y axis turns
 * logarithmic when the values span more than a factor of 20 (perplexity after heavy compression).
 * Points that no other point beats on both axes (larger x, smaller y) are ringed: the Pareto front.
 */
export function scatterChart(series, { xLabel, yLabel, reference, lowerIsBetter = true, width = 720, height = 380 } = {}) {
  const left = 70;
  const right = 150;
  const top = 16;
  const bottom = 50;
  const all = series.flatMap((se) => se.points);
  const ys = all.map((p) => p.y).concat(reference ? [reference.y] : []);
  const xs = all.map((p) => p.x).concat([0]);
  // Ratios on round steps: 5 points up to 30 %, else 10 points.
  const xStep = Math.max(...xs) <= 0.3 ? 0.05 : 0.1;
  const xMax = Math.min(1, Math.ceil((Math.max(...xs) + 1e-9) / xStep) * xStep) || 1;
  const xMin = 0;
  const yMinRaw = Math.min(...ys);
  const yMaxRaw = Math.max(...ys);
  const log = yMinRaw > 0 && yMaxRaw / yMinRaw > 20;
  const f = log ? Math.log10 : (v) => v;
  const pad = (f(yMaxRaw) - f(yMinRaw)) * 0.08 || 1;
  const yLo = log ? f(yMinRaw) - pad : Math.max(0, f(yMinRaw) - pad);
  const yHi = f(yMaxRaw) + pad;
  const px = (x) => left + ((x - xMin) / (xMax - xMin)) * (width - left - right);
  const py = (y) => top + (1 - (f(y) - yLo) / (yHi - yLo)) * (height - top - bottom);
  const svg = s("svg", { class: "chart scatter-chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": `${yLabel} against ${xLabel}` });
  const plotRight = width - right;
  svg.append(s("line", { x1: left, y1: height - bottom, x2: plotRight, y2: height - bottom, class: "axis" }),
    s("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }));
  for (const t of ticks(xMin, xMax, Math.round(xMax / xStep))) {
    svg.append(s("line", { x1: px(t), y1: height - bottom, x2: px(t), y2: height - bottom + 5, class: "axis" }),
      s("text", { x: px(t), y: height - bottom + 18, "text-anchor": "middle", class: "label" }, percent(t, 0)));
  }
  for (const t of ticks(yLo, yHi)) {
    const value = log ? 10 ** t : t;
    const y = top + (1 - (t - yLo) / (yHi - yLo)) * (height - top - bottom);
    svg.append(s("line", { x1: left - 5, y1: y, x2: plotRight, y2: y, class: "grid" }),
      s("text", { x: left - 8, y: y + 4, "text-anchor": "end", class: "label" }, num(value, value < 10 ? 2 : 1)));
  }
  svg.append(
    s("text", { x: (left + plotRight) / 2, y: height - 8, "text-anchor": "middle", class: "axis-title" }, xLabel),
    s("text", { x: 14, y: (top + height - bottom) / 2, "text-anchor": "middle", class: "axis-title",
      transform: `rotate(-90 14 ${(top + height - bottom) / 2})` }, `${yLabel}${log ? " (log scale)" : ""}`),
  );
  if (reference) {
    svg.append(s("line", { x1: left, y1: py(reference.y), x2: plotRight, y2: py(reference.y), class: "reference" }),
      s("text", { x: plotRight - 4, y: py(reference.y) - 5, "text-anchor": "end", class: "label" }, reference.label));
  }
  const front = new Set(all.filter((p) => !all.some((q) => q !== p && q.x >= p.x
    && (lowerIsBetter ? q.y <= p.y : q.y >= p.y) && (q.x > p.x || q.y !== p.y))));
  series.forEach((se, k) => {
    const color = PALETTE[k % PALETTE.length];
    const sorted = [...se.points].sort((a, b) => a.x - b.x);
    if (sorted.length > 1) {
      svg.append(s("polyline", { points: sorted.map((p) => `${px(p.x)},${py(p.y)}`).join(" "), stroke: color,
        fill: "none", class: "series-line" }));
    }
    for (const p of sorted) {
      svg.append(s("circle", { cx: px(p.x), cy: py(p.y), r: front.has(p) ? 6 : 4.5, fill: color,
        class: front.has(p) ? "point pareto" : "point",
        dataset: { series: se.name, x: p.x, y: p.y, job: p.id || "" } },
      s("title", {}, `${se.name}: ${p.label || ""} ratio ${percent(p.x)}, ${yLabel} ${num(p.y)}`)));
    }
    const ly = top + 10 + k * 20;
    svg.append(s("circle", { cx: plotRight + 20, cy: ly, r: 5, fill: color }),
      s("text", { x: plotRight + 30, y: ly + 4, class: "label legend" }, se.name));
  });
  return svg;
}
