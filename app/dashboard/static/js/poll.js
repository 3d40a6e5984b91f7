// Polling that stops when the page is left, waits for each answer before asking again, and backs
// off while requests fail (a server restart, a rate limit's 429) instead of adding to the load.

const MAX_BACKOFF_MS = 30_000;

export function poll(fn, intervalMs) {
  let stopped = false;
  let timer = null;
  let delay = intervalMs;
  async function tick() {
    if (stopped) return;
    let again = true;
    try {
      again = (await fn()) !== false;
      delay = intervalMs;
    } catch (exc) {
      console.warn("poll failed", exc);
      delay = Math.min(delay * 2, MAX_BACKOFF_MS);
    }
    if (!stopped && again) timer = setTimeout(tick, delay);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
