#!/usr/bin/env bash
# Spectra quickstart: install into .venv, start `spectra serve` with the embedded defaults (SQLite,
# filesystem broker, local artifact store, one local worker), run one real compression job over the
# HTTP API with curl, follow its progress as it is pushed (Server-Sent Events), print its metrics and artifacts, download the whole artifact as one
# tar and unpack it into a folder that transformers loads, then stop the server.
# Set SPECTRA_KEEP_RUNNING=1 to leave the server running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PORT=${SPECTRA_PORT:-8000}
API="http://127.0.0.1:${PORT}"
export SPECTRA_HOME=${SPECTRA_HOME:-$REPO/.spectra}
export SPECTRA_PUBLIC_URL=${SPECTRA_PUBLIC_URL:-$API}

echo "== 1/5 install into .venv (torch 2.13.0, then spectra[all])"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[all]'
PY=.venv/bin/python

echo "== 2/5 offline Hugging Face cache"
# The hub is not reachable here: lay out the hub cache from ../shared/models so the hub id
# raincandy-u/TinyStories-656K resolves with HF_HUB_OFFLINE=1 through the real hub code path.
export HF_HOME=${HF_HOME:-$SPECTRA_HOME/hf}
SHARED_MODEL="$REPO/../shared/models/TinyStories-656K"
if [ -d "$SHARED_MODEL" ]; then
  export HF_HUB_OFFLINE=1
  REV=0123456789abcdef0123456789abcdef01234567
  SNAP="$HF_HOME/hub/models--raincandy-u--TinyStories-656K/snapshots/$REV"
  mkdir -p "$SNAP" "$HF_HOME/hub/models--raincandy-u--TinyStories-656K/refs"
  find "$SHARED_MODEL" -maxdepth 1 -type f ! -name SOURCE.md -exec cp {} "$SNAP/" \;
  printf '%s' "$REV" > "$HF_HOME/hub/models--raincandy-u--TinyStories-656K/refs/main"
  echo "seeded $SNAP"
else
  echo "no ../shared/models: the model will be downloaded from the hub"
fi

echo "== 3/5 start spectra serve on $API (log: $SPECTRA_HOME/serve.log)"
mkdir -p "$SPECTRA_HOME"
.venv/bin/spectra serve --host 127.0.0.1 --port "$PORT" >"$SPECTRA_HOME/serve.log" 2>&1 &
SERVER=$!
stop_server() {
  if [ "${SPECTRA_KEEP_RUNNING:-0}" = 1 ]; then
    echo "server left running (pid $SERVER, $API); stop it with: kill $SERVER"
  elif kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER"; wait "$SERVER" || true
    echo "server stopped; start it again with: .venv/bin/spectra serve"
  fi
}
trap stop_server EXIT
for i in $(seq 1 120); do
  curl -fsS "$API/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "spectra serve exited:"; tail -n 40 "$SPECTRA_HOME/serve.log"; exit 1; }
  sleep 1
done
curl -fsS "$API/healthz" >/dev/null

echo "== 4/5 create an API key and submit a job"
KEY=$(.venv/bin/spectra admin create-key --tenant quickstart)
JOB=$(curl -fsS -X POST "$API/v1/jobs" -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{
  "model": "raincandy-u/TinyStories-656K",
  "method": "svd_llm",
  "target_ratio": 0.2,
  "calibration": {"source": "tinystories", "samples": 16, "seq_len": 128},
  "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 8}
}')
JOB_ID=$(printf '%s' "$JOB" | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "job $JOB_ID queued"

echo "== 5/5 progress (Server-Sent Events from GET $API/v1/jobs/$JOB_ID/events)"
BODY=$($PY scripts/follow_job.py "$API" "$JOB_ID" "$KEY")
STATUS=$(printf '%s' "$BODY" | $PY -c 'import json,sys; print(json.load(sys.stdin)["status"])')
printf '%s' "$BODY" | $PY -c 'import json,sys
j=json.load(sys.stdin)
print("status:", j["status"])
if j.get("error"): print("error:", json.dumps(j["error"]))
m = j.get("metrics") or {}
if "ppl_before" in m:
    print("perplexity on %s: %.2f before -> %.2f after; removed %.1f%% of decoder linear parameters (target %.0f%%)"
          % ((m.get("protocol") or {}).get("corpus"), m["ppl_before"], m["ppl_after"],
             100 * m["achieved_ratio"], 100 * m["target_ratio"]))
print("all metrics:"); print(json.dumps(m, indent=2, sort_keys=True))'
[ "$STATUS" = succeeded ] || { echo "the job did not succeed; server log: $SPECTRA_HOME/serve.log"; exit 1; }
echo "artifacts (GET $API/v1/jobs/$JOB_ID/artifacts; stored under $SPECTRA_HOME/artifacts):"
curl -fsS "$API/v1/jobs/$JOB_ID/artifacts" -H "X-API-Key: $KEY" | $PY -c 'import json,sys
for a in json.load(sys.stdin):
    print("  %-28s %10d bytes  sha256 %s" % (a["name"], a["size"], a["sha256"]))
    print("    " + a["url"])'

echo "== download the whole artifact as one tar and unpack it (GET $API/v1/jobs/$JOB_ID/archive)"
DOWNLOADS=${SPECTRA_DOWNLOAD_DIR:-$SPECTRA_HOME/downloads}
mkdir -p "$DOWNLOADS"
curl -fsS -o "$DOWNLOADS/spectra-$JOB_ID.tar" "$API/v1/jobs/$JOB_ID/archive" -H "X-API-Key: $KEY"
# The sidecar holds the sha256 the server announced in X-Archive-SHA256: check the download against it.
curl -fsS "$API/v1/jobs/$JOB_ID/archive.sha256" -H "X-API-Key: $KEY" >"$DOWNLOADS/spectra-$JOB_ID.tar.sha256"
(cd "$DOWNLOADS" && sha256sum -c "spectra-$JOB_ID.tar.sha256")
tar -xf "$DOWNLOADS/spectra-$JOB_ID.tar" -C "$DOWNLOADS"
MODEL_DIR="$DOWNLOADS/spectra-$JOB_ID"
ls -l "$MODEL_DIR"
GENERATE="$REPO/.venv/bin/python -c \"from transformers import AutoModelForCausalLM, AutoTokenizer; d='$MODEL_DIR'; t=AutoTokenizer.from_pretrained(d, trust_remote_code=True); m=AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True); print(t.decode(m.generate(**t('Once upon a time', return_tensors='pt'), max_new_tokens=40, do_sample=False)[0], skip_special_tokens=True))\""
echo "generate text from it (low-rank layers load through the modeling file in the folder: trust_remote_code=True):"
echo "  $GENERATE"
eval "$GENERATE"
echo "API key for this tenant (shown once): $KEY"
