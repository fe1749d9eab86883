"""Peak memory per stage: resident memory (CPU) and torch's allocator (GPU), measured stage by stage.

    meter = MemoryMeter()
    with meter.stage("sft"):
        ...                                  # meter.records["sft"] = {"rss_peak_bytes": ..., ...}
    print(memory_table(meter.records, timings))

Resident memory, two ways (``$CITING_MEMORY_METHOD``, or ``MemoryMeter(method=...)``):

- ``sampled`` (the default on Linux): a daemon thread reads ``VmRSS`` from ``/proc/self/status`` every 10 ms
  while a stage is open. A spike shorter than that can be missed; a training step or a generation batch lasts
  far longer.
- ``vmhwm``: exact. The kernel keeps a high-water mark of the resident set (``VmHWM``); writing ``5`` to
  ``/proc/self/clear_refs`` resets it to the current size, so a stage resets it when it starts and reads it when
  it ends, with no sampling. The catch: that mark is also what ``getrusage``/``wait4`` report as the process's
  peak (``/usr/bin/time -v``, ``make bench``'s peak RSS column), so after a reset those tools only see the peak
  since the last stage began. Hence opt-in. Where the kernel refuses the reset, ``sampled`` is used.

Without ``/proc`` (macOS, Windows) the resident fields are None (``rss_method: None``).

GPU. When torch has initialised CUDA, a stage resets torch's peak statistics and reads
``max_memory_allocated`` (tensors) and ``max_memory_reserved`` (what the caching allocator holds from the
driver) at its end. On a machine without a GPU both fields are None.

Stages may nest (a stage inside a stage): the outer stage's peak is never lower than an inner one's, although
the inner one resets the counters. A stage's peak counts everything the process holds at that time, including
what earlier stages left behind; ``rss_start_bytes`` says how much that was.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from citing_trl.errors import ConfigError

METHOD_ENV = "CITING_MEMORY_METHOD"
METHODS = ("sampled", "vmhwm", "off")
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
GIB = 1024**3
RECORD_KEYS = ("rss_peak_bytes", "rss_start_bytes", "rss_end_bytes", "rss_method", "gpu_allocated_peak_bytes",
               "gpu_reserved_peak_bytes")


def _status_kib(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    """The process's resident memory now (``VmRSS``), or None without ``/proc``."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def hwm_bytes() -> int | None:
    """The kernel's resident high-water mark (``VmHWM``) since the process started or since the last reset."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_hwm() -> bool:
    """Reset ``VmHWM`` to the current resident size; False where the kernel refuses (or there is no ``/proc``)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class _Sampler:
    """Fallback peak reader: a daemon thread that samples ``VmRSS`` while any stage is open."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self.users = interval, 0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes() or 0)

    def start(self) -> None:
        self.users += 1
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self.users -= 1
        if self.users <= 0 and self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def reset(self) -> None:
        self.peak = rss_bytes() or 0

    def read(self) -> int:
        return max(self.peak, rss_bytes() or 0)


def _cuda():
    """torch.cuda when torch is loaded and CUDA is initialised (nothing to measure otherwise), else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    except Exception:  # a broken driver must not stop a run that only measures
        return None


class _Open:
    """A stage being measured: the peaks folded in so far (before a nested stage reset the counters)."""

    def __init__(self, name: str, rss_start: int | None):
        self.name, self.rss_start = name, rss_start
        self.rss_peak = rss_start or 0
        self.gpu_allocated = self.gpu_reserved = 0
        self.gpu_seen = False


class MemoryMeter:
    """Measures stages and keeps one record per stage name in :attr:`records` (a later stage of the same name
    replaces the record). :attr:`process_peak_rss_bytes` is the highest resident figure seen so far (the
    process's start-up included), which the per-stage resets would otherwise hide."""

    def __init__(self, method: str | None = None):
        """``method``: ``"sampled"``, ``"vmhwm"`` or ``"off"`` (no resident figures); default
        ``$CITING_MEMORY_METHOD``, else ``"sampled"``. Without ``/proc`` the method is None."""
        self.records: dict[str, dict] = {}
        self.process_peak_rss_bytes: int | None = None
        self._open: list[_Open] = []
        self._sampler = _Sampler()
        method = method or os.environ.get(METHOD_ENV) or "sampled"
        if method not in METHODS:
            raise ConfigError(f"${METHOD_ENV} must be one of {', '.join(METHODS)}, got {method!r}")
        if rss_bytes() is None or method == "off":
            method = None
        elif method == "vmhwm" and not reset_hwm():
            method = "sampled"  # the kernel refuses the reset
        self.method = method

    # -- the counters, whatever reads them ----------------------------------------------------------
    def _read_rss_peak(self) -> int | None:
        if self.method == "vmhwm":
            return hwm_bytes()
        if self.method == "sampled":
            return self._sampler.read()
        return None

    def _reset_rss_peak(self) -> None:
        if self.method == "vmhwm":
            reset_hwm()
        elif self.method == "sampled":
            self._sampler.reset()

    def _fold(self) -> None:
        """Fold the counters' current peaks into every open stage (before they are reset)."""
        rss = self._read_rss_peak()
        cuda = _cuda()
        alloc = cuda.max_memory_allocated() if cuda else None
        reserved = cuda.max_memory_reserved() if cuda else None
        if rss is not None:
            self.process_peak_rss_bytes = max(self.process_peak_rss_bytes or 0, rss)
        for st in self._open:
            if rss is not None:
                st.rss_peak = max(st.rss_peak, rss)
            if cuda:
                st.gpu_seen = True
                st.gpu_allocated = max(st.gpu_allocated, alloc)
                st.gpu_reserved = max(st.gpu_reserved, reserved)

    def _reset(self) -> None:
        self._reset_rss_peak()
        cuda = _cuda()
        if cuda:
            cuda.reset_peak_memory_stats()

    # -- the public part ---------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str):
        """Measure the ``with`` block as stage ``name``; the record is written even when the block raises."""
        self._fold()
        if self.method == "sampled":
            self._sampler.start()
        self._reset()
        st = _Open(name, rss_bytes())
        self._open.append(st)
        try:
            yield st
        finally:
            self._fold()  # this stage and every enclosing one see the peak
            self._open.remove(st)
            if self.method == "sampled":
                self._sampler.stop()
            self.records[name] = {
                "rss_peak_bytes": st.rss_peak if self.method else None,
                "rss_start_bytes": st.rss_start,
                "rss_end_bytes": rss_bytes(),
                "rss_method": self.method,
                "gpu_allocated_peak_bytes": st.gpu_allocated if st.gpu_seen else None,
                "gpu_reserved_peak_bytes": st.gpu_reserved if st.gpu_seen else None,
            }

    def summary(self) -> dict:
        """What a run saves (``memory.json``): every stage's record and the process peak so far."""
        self._fold()
        return {"stages": dict(self.records), "process_peak_rss_bytes": self.process_peak_rss_bytes,
                "rss_method": self.method}


def _gib(value) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def memory_table(records: dict[str, dict], timings: dict[str, float] | None = None,
                 process_peak: int | None = None) -> str:
    """A plain-text table: one line per stage with its time (``<name>_s`` in ``timings``, when there) and
    peak / start / end resident memory and the GPU peaks, in GiB."""
    timings = timings or {}
    gpu = any(r.get("gpu_allocated_peak_bytes") is not None for r in records.values())
    head = f"{'stage':28s} {'seconds':>8s} {'peak RSS':>9s} {'start':>7s} {'end':>7s}"
    head += f" {'GPU alloc':>9s} {'GPU rsvd':>9s}" if gpu else ""
    lines = [head + "   (GiB)"]
    for name, r in records.items():
        secs = timings.get(f"{name}_s")
        line = (f"{name:28s} {'-' if secs is None else f'{secs:.1f}':>8s} {_gib(r.get('rss_peak_bytes')):>9s} "
                f"{_gib(r.get('rss_start_bytes')):>7s} {_gib(r.get('rss_end_bytes')):>7s}")
        if gpu:
            line += f" {_gib(r.get('gpu_allocated_peak_bytes')):>9s} {_gib(r.get('gpu_reserved_peak_bytes')):>9s}"
        lines.append(line)
    if process_peak is not None:
        lines.append(f"{'process peak (any stage)':28s} {'':>8s} {_gib(process_peak):>9s}")
    return "\n".join(lines)


def trim_heap() -> bool:
    """Ask glibc to give freed heap memory back to the system (``malloc_trim(0)``). Freed tensors of a finished
    stage otherwise often stay resident: glibc keeps freed chunks for reuse. No effect on results; False where
    there is no glibc (macOS, musl)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            if not hasattr(_LIBC, "malloc_trim"):  # not glibc
                raise AttributeError("malloc_trim")
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


_LIBC = None
