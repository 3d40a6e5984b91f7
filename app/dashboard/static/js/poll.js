// Polling that stops when the page is left and waits for each answer before asking again.

export function poll(fn, intervalMs) {
  let stopped = false;
  let timer = null;
  async function tick() {
    if (stopped) return;
    let again = true;
    try {
      again = (await fn()) !== false;
    } catch (exc) {
      console.warn("poll failed", exc);
    }
    if (!stopped && again) timer = setTimeout(tick, intervalMs);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
