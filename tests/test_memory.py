"""citing_trl/memory.py: per-stage peak resident memory (VmHWM reset, or a sampling thread) and GPU peaks."""

from __future__ import annotations

import mmap
import sys
import time

import pytest

from citing_trl.errors import ConfigError
from citing_trl.memory import METHOD_ENV, RECORD_KEYS, MemoryMeter, hwm_bytes, memory_table, reset_hwm, rss_bytes

MIB = 1024**2
BUFFER = 256 * MIB
linux_proc = pytest.mark.skipif(not sys.platform.startswith("linux") or rss_bytes() is None, reason="needs /proc")


def touch_buffer(hold_s: float = 0.0) -> int:
    """Map, write (resident, not just reserved), hold and unmap a 256 MiB buffer. An anonymous mapping of its own,
    not malloc: after a long test session the heap may hold freed memory that is still resident, and a malloc'd
    buffer served from it would not raise the resident size at all."""
    buf = mmap.mmap(-1, BUFFER)
    for offset in range(0, BUFFER, mmap.PAGESIZE):  # touch every page
        buf[offset] = 1
    time.sleep(hold_s)
    size = len(buf)
    buf.close()
    return size


@linux_proc
def test_reset_lowers_the_high_water_mark():
    touch_buffer()  # the mark is now at least 256 MiB above the resident size
    assert hwm_bytes() >= rss_bytes() + BUFFER // 2
    assert reset_hwm(), "this kernel refuses /proc/self/clear_refs; the sampled method covers it"
    assert hwm_bytes() < rss_bytes() + BUFFER // 2


@linux_proc
@pytest.mark.parametrize("method", ["vmhwm", "sampled"])
def test_a_freed_buffer_counts_in_its_stage_only(method):
    if method == "vmhwm" and not reset_hwm():
        pytest.skip("the kernel refuses the VmHWM reset")
    meter = MemoryMeter(method=method)
    with meter.stage("big"):
        touch_buffer(hold_s=0.2)  # the sampler looks every 5 ms
    with meter.stage("small"):
        time.sleep(0.05)
    big, small = meter.records["big"], meter.records["small"]
    assert big["rss_method"] == small["rss_method"] == method
    assert big["rss_peak_bytes"] >= big["rss_start_bytes"] + BUFFER * 0.9
    assert small["rss_peak_bytes"] < big["rss_peak_bytes"] - BUFFER // 2
    assert small["rss_peak_bytes"] >= small["rss_start_bytes"] * 0.9
    assert meter.summary()["process_peak_rss_bytes"] >= big["rss_peak_bytes"]


@linux_proc
def test_an_outer_stage_keeps_the_peak_of_a_nested_one():
    meter = MemoryMeter()
    with meter.stage("outer"):
        with meter.stage("inner"):
            touch_buffer(hold_s=0.2)
        with meter.stage("after"):  # resets the counters again
            pass
    outer, inner, after = (meter.records[k] for k in ("outer", "inner", "after"))
    assert outer["rss_peak_bytes"] >= inner["rss_peak_bytes"] > after["rss_peak_bytes"] + BUFFER // 2


@linux_proc
def test_the_default_method_leaves_the_process_peak_to_time_and_wait4(monkeypatch):
    """Only the opt-in vmhwm method resets the kernel's mark, which /usr/bin/time and wait4 report."""
    monkeypatch.delenv(METHOD_ENV, raising=False)
    if not reset_hwm():
        pytest.skip("the kernel refuses the VmHWM reset")
    meter = MemoryMeter()
    assert meter.method == "sampled"
    with meter.stage("big"):
        touch_buffer(hold_s=0.2)
    with meter.stage("next"):
        pass
    assert hwm_bytes() >= rss_bytes() + BUFFER // 2  # the buffer's peak is still on the kernel's record
    assert meter.records["big"]["rss_peak_bytes"] >= meter.records["big"]["rss_start_bytes"] + BUFFER * 0.9


def test_method_from_the_environment(monkeypatch):
    monkeypatch.setenv(METHOD_ENV, "off")
    meter = MemoryMeter()
    with meter.stage("s"):
        pass
    assert meter.method is None and meter.records["s"]["rss_peak_bytes"] is None
    monkeypatch.setenv(METHOD_ENV, "exact")
    with pytest.raises(ConfigError, match=r"^\$CITING_MEMORY_METHOD must be one of sampled, vmhwm, off, got 'exact'$"):
        MemoryMeter()


def test_records_have_every_key_and_no_gpu_figures_on_cpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    meter = MemoryMeter()
    with pytest.raises(ValueError):
        with meter.stage("fails"):  # a stage that raises is still recorded
            raise ValueError("boom")
    with meter.stage("tensor"):
        torch.ones(1024, 1024).sum()
    for record in meter.records.values():
        assert tuple(record) == RECORD_KEYS
        assert record["gpu_allocated_peak_bytes"] is None and record["gpu_reserved_peak_bytes"] is None
    table = memory_table(meter.records, {"tensor_s": 1.5})
    assert "GPU" not in table and "tensor" in table and "1.5" in table


def test_without_proc_the_resident_fields_are_none(monkeypatch, tmp_path):
    import citing_trl.memory as memory

    monkeypatch.setattr(memory, "STATUS", tmp_path / "missing")
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "no" / "clear_refs")
    meter = MemoryMeter()
    assert meter.method is None
    with meter.stage("s"):
        pass
    record = meter.records["s"]
    assert record["rss_peak_bytes"] is None and record["rss_start_bytes"] is None and record["rss_method"] is None
    assert "-" in memory_table(meter.records)
