// The API client: the key from sessionStorage as X-API-Key (never in a URL), JSON in and out, and
// conditional GETs (If-None-Match) where the server sends ETags, so polling costs the server little.

const KEY_NAME = "spectra.apiKey";

export const auth = {
  key: () => sessionStorage.getItem(KEY_NAME),
  signIn: (key) => sessionStorage.setItem(KEY_NAME, key),
  signOut: () => sessionStorage.removeItem(KEY_NAME),
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

const listeners = new Set();
/** Called with no argument when the API answers 401: the key is wrong or was revoked. */
export function onUnauthorized(fn) { listeners.add(fn); }

async function parse(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) return response.json();
  const text = await response.text();
  return text || null;
}

export async function request(path, { method = "GET", body, headers = {}, signal, key } = {}) {
  const all = { Accept: "application/json", ...headers };
  const apiKey = key ?? auth.key();
  if (apiKey) all["X-API-Key"] = apiKey;
  if (body !== undefined) all["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers: all, signal, cache: "no-store", credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && key === undefined) listeners.forEach((fn) => fn());
  const data = response.status === 304 ? null : await parse(response);
  if (!response.ok && response.status !== 304) {
    throw new ApiError(response.status, data && typeof data === "object" ? data.detail : data);
  }
  return { status: response.status, data, headers: response.headers };
}

/** POST a file as multipart/form-data (field `file`); the browser writes the boundary header. */
export async function upload(path, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch(path, { method: "POST", body: form, cache: "no-store", credentials: "omit",
    headers: { Accept: "application/json", "X-API-Key": auth.key() } });
  if (response.status === 401) listeners.forEach((fn) => fn());
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data && typeof data === "object" ? data.detail : data);
  return data;
}

/** GET with If-None-Match: the last body again (changed=false) when the server answers 304. */
export class Conditional {
  constructor() { this.cache = new Map(); }

  async get(path, options = {}) {
    const seen = this.cache.get(path);
    const headers = seen && seen.etag ? { "If-None-Match": seen.etag } : {};
    const { status, data, headers: got } = await request(path, { ...options, headers });
    if (status === 304 && seen) return { data: seen.data, changed: false };
    this.cache.set(path, { etag: got.get("ETag"), data });
    return { data, changed: true };
  }
}

/** A random Idempotency-Key (crypto.randomUUID needs a secure context; getRandomValues does not). */
export function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "dash-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
