// Server-Sent Events over fetch: EventSource cannot send the X-API-Key header, so the stream is read
// from a fetch body and parsed here (the text/event-stream format: "field: value" lines, a blank
// line ends an event).

import { auth } from "./api.js";

/** Split a text/event-stream body into {event, data, id} messages, calling onMessage for each. */
export class EventStreamParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  push(text) {
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();  // an unfinished line waits for the next chunk
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onMessage({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;  // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }
}

/**
 * Follow `path` as an event stream from after `lastId`. Resolves "ended" when the server closed the
 * stream, "unsupported" when it answered something other than text/event-stream (an older server:
 * the caller polls instead); rejects on a network error or an HTTP error.
 */
export async function followStream(path, { lastId, onMessage, signal }) {
  const headers = { Accept: "text/event-stream", "X-API-Key": auth.key() };
  if (lastId) headers["Last-Event-ID"] = String(lastId);
  const response = await fetch(path, { headers, signal, cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
    await response.body?.cancel();
    return "unsupported";
  }
  const parser = new EventStreamParser(onMessage);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return "ended";
    parser.push(value);
  }
}
