"""A cap on the memory one job may allocate in its pool child (Linux RLIMIT_DATA).

Without it, a job too big for a CPU worker's RAM is ended by the kernel's OOM killer: the pool child
is SIGKILLed, Celery re-delivers the job, the next attempt is killed the same way, until the job runs
out of attempts with no word of why (and the OOM killer may pick another process on the host, such
as the database). With the cap, the allocation that would cross it fails inside the job (torch's CPU
allocator raises, Python raises MemoryError), worker.outcome classifies that as `out_of_memory`, and
the job fails on its first attempt with a message saying what to change. GPU memory is not covered:
CUDA already raises torch.OutOfMemoryError.

RLIMIT_DATA counts the heap and private writable mappings (since Linux 4.7): every large tensor, and
also a safetensors file, which torch maps privately (a model over the cap fails right at that mmap, with
ENOMEM's "Cannot allocate memory"). The cap is relative: what the child already holds when the job
starts (torch imported) plus the job's allowance.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager


def data_segment_bytes() -> int:
    """This process's VmData (heap + private writable mappings), from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmData missing from /proc/self/status")


@contextmanager
def job_memory_cap(allowance_mb: int) -> Iterator[None]:
    """Within the block, allocations beyond `allowance_mb` MiB more than now fail; 0 = no cap.
    The previous limit is back when the block ends, so recording the outcome has memory again."""
    if allowance_mb <= 0:
        yield
        return
    previous = resource.getrlimit(resource.RLIMIT_DATA)
    cap = data_segment_bytes() + allowance_mb * 1024 * 1024
    hard = previous[1]
    if hard != resource.RLIM_INFINITY and cap > hard:
        cap = hard
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, previous)
