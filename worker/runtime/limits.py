"""The runtime's own threads, fitted to the sandbox it runs in.

Arrow sizes its CPU and I/O thread pools by the machine's cores (and 8 I/O threads),
not by the sandbox's CPU limit: every thread is a pid under the pids limit and an
allocator arena of its own. Both pools get the CPU limit. pyarrow's probe for pandas is
skipped (worker/arrays.py): the runtime never hands data to pandas.

Not done, measured: a fixed 1 MiB glibc mmap threshold (`mallopt`) kept the process
sandbox's runtime at ~190 MiB for any fragment size (not ~290 MiB), but every big Arrow
buffer then cost a fresh mmap and its page faults (Arrow uses the system allocator
there): 1.7x the wall time of a 512 MiB fragment.
"""

from __future__ import annotations

import pyarrow as pa

from worker.arrays import skip_pandas_probe


def apply(cpus: int) -> None:
    pa.set_cpu_count(max(1, cpus))
    pa.set_io_thread_count(max(1, cpus))
    skip_pandas_probe()
