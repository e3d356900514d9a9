"""The runtime's own threads and memory, fitted to the sandbox it runs in.

- Arrow sizes its CPU and I/O thread pools by the machine's cores (and 8 I/O threads),
  not by the sandbox's CPU limit: every thread is a pid under the pids limit and an
  allocator arena of its own. Both pools get the CPU limit.
- glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB), so
  after the first 4 MiB read block is freed every later one comes from the heap, where
  fragments of them pile up: the runtime's peak grew with the fragment's size (142 ->
  442 MiB from 1 MiB to 2 GiB). A fixed 1 MiB threshold returns big blocks to the system
  when they are freed; Arrow's own pool is not affected.
- pyarrow's probe for pandas is skipped (worker/nopandas.py): the runtime never hands
  data to pandas.
"""

from __future__ import annotations

import contextlib
import sys

import pyarrow as pa

from worker.nopandas import skip_pandas_probe

MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter, glibc's malloc.h


def apply(cpus: int) -> None:
    pa.set_cpu_count(max(1, cpus))
    pa.set_io_thread_count(max(1, cpus))
    _fix_mmap_threshold()
    skip_pandas_probe()


def _fix_mmap_threshold() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to fix
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
