// Numbers and times as the tables show them.

export const dash = "–";

export function num(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return dash;
  if (typeof value !== "number") return String(value);
  if (Math.abs(value) >= 1e5 || Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toFixed(digits);
}

export function percent(value, digits = 1) {
  if (value === null || value === undefined) return dash;
  return `${(value * 100).toFixed(digits)} %`;
}

export function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return dash;
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(1)} s`;
  const m = Math.floor(value / 60);
  if (m < 60) return `${m} min ${Math.round(value % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function bytes(value) {
  if (value === null || value === undefined) return dash;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = value;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function time(iso) {
  if (!iso) return dash;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** Seconds the job ran: finished - started, or until now while it runs. */
export function jobDuration(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return (end - new Date(job.started_at)) / 1000;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
