"""Run one compression job in this process and print its measured memory and time as one JSON line.

Used by bench/estimate_check.py, one fresh process per job, so every measurement starts from the
same runtime. Anonymous memory (RssAnon: heap, tensors; not the page cache or mapped checkpoint
files) is sampled every 2 ms by a thread, per stage and overall; VmHWM (the kernel's resident
high-water mark, file pages included) is read at the end. The runtime's own footprint (python,
torch, transformers, the tokenizer) is measured before the job starts, after importing them.

    .venv/bin/python bench/memory_probe.py '{"spec": {...}, "model_roots": ["/path"]}'
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_STATUS = Path("/proc/self/status")


def status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class AnonSampler:
    """Peak RssAnon overall and per stage (the stage is whatever progress last reported)."""

    def __init__(self, period: float = 0.002) -> None:
        self.period, self.stage, self.peak, self.by_stage = period, "start", 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            anon = status_kib("RssAnon") * 1024
            self.peak = max(self.peak, anon)
            self.by_stage[self.stage] = max(self.by_stage.get(self.stage, 0), anon)
            time.sleep(self.period)

    def progress(self, stage: str, fraction: float, message: str) -> None:
        self.stage = stage

    def __enter__(self) -> "AnonSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    job = json.loads(sys.argv[1])
    import torch
    import transformers  # noqa: F401

    from compression.models import preload_transformers
    from compression.run import RunSettings, run

    torch.set_num_threads(int(job.get("threads", 2)))
    preload_transformers()
    runtime_anon = status_kib("RssAnon") * 1024
    settings = RunSettings(data_dir=REPO.parent / "shared" / "data",
                           model_roots=tuple(Path(p) for p in job["model_roots"]))
    with tempfile.TemporaryDirectory() as tmp, AnonSampler() as sampler:
        started = time.perf_counter()
        result = run(job["spec"], Path(tmp) / "out", settings=settings, progress=sampler.progress)
        wall = time.perf_counter() - started
    print(json.dumps({
        "runtime_anon": runtime_anon, "peak_anon": sampler.peak, "peak_anon_by_stage": sampler.by_stage,
        "vm_hwm": status_kib("VmHWM") * 1024,
        "execution_mode": (result.report.get("execution") or {}).get("mode", "resident"), "seconds": result.report["metrics"]["seconds"], "wall": wall,
    }))


if __name__ == "__main__":
    main()
