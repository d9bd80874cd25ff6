"""The timing harness: threads, machine facts, a clock, contenders timed in alternating rounds,
medians, and torch.profiler's top ops (for the misses)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import torch

from musicgen.runtime import cpu_info, default_precision, usable_cores

log = logging.getLogger(__name__)

Fn = Callable[[], Any]


# ----------------------------------------------------------------------------- machine
def set_threads(threads: int | None) -> int:
    """``torch.set_num_threads`` for every contender (None: the usable cores); returns the count."""
    torch.set_num_threads(int(usable_cores() if threads is None else threads))
    return torch.get_num_threads()


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu_model, cpu_flags = cpu_info()
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    return {
        "cpu": cpu_model or platform.processor() or platform.machine(),
        "cpu_flags": {flag: flag in cpu_flags for flag in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")},
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers_version,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "default_precision": default_precision(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_start": load_average(),
        "date": datetime.now().isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- timing
class Clock:
    """Seconds one call takes (synchronising CUDA around it)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise ``TimeoutError`` in this (main) thread after ``seconds``; a no-op where SIGALRM is missing."""
    usable = seconds and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    fired = []

    def _raise(signum, frame):
        fired.append(True)
        raise TimeoutError(f"took longer than {seconds:g}s")

    old_handler = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    except Exception as error:  # the alarm can land inside code that wraps it (torch.compile's tracing)
        if fired and not isinstance(error, TimeoutError):
            raise TimeoutError(f"took longer than {seconds:g}s (surfaced as {type(error).__name__})") from error
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)


def error_text(error: BaseException) -> str:
    message = str(error).strip()
    first_line = message.splitlines()[0] if message else ""
    return f"{type(error).__name__}: {first_line[:300]}"


def alternate(
    contenders: dict[str, Fn],
    clock: Clock,
    warmup: int,
    reps: int | dict[str, int],
    warm_fns: dict[str, Fn] | None = None,
    timeouts: dict[str, float | None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, str]]:
    """Time contenders in alternating rounds.

    Each is first warmed up (``warmup`` untimed calls of ``warm_fns[name]`` or itself; the first
    call's time is kept as ``first``: it includes compiling). A contender whose warmup raises or
    outlives ``timeouts[name]`` is dropped, its error kept. Then rounds: every contender once
    (``reps[name]`` rounds for it), the first of each round rotating.
    Returns (times per contender, first-call seconds, errors).
    """
    warm_fns, timeouts = warm_fns or {}, timeouts or {}
    first: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name, fn in contenders.items():
        try:
            with time_limit(timeouts.get(name)):
                for _ in range(max(1, warmup)):
                    seconds = clock(warm_fns.get(name, fn))
                    first.setdefault(name, seconds)
        except Exception as error:  # a failed compile (or OOM) is a result too: keep it, go on
            log.warning("%s: warmup failed: %s", name, error_text(error))
            errors[name] = error_text(error)
    live = [name for name in contenders if name not in errors]
    reps_of = reps if isinstance(reps, dict) else {name: reps for name in live}
    times: dict[str, list[float]] = {name: [] for name in live}
    rounds = max((reps_of.get(name, 0) for name in live), default=0)
    for round_ in range(rounds):
        shift = round_ % len(live)
        for name in live[shift:] + live[:shift]:
            if round_ < reps_of.get(name, 0):
                times[name].append(clock(contenders[name]))
        log.info("round %d/%d: %s", round_ + 1, rounds,
                 ", ".join(f"{name} {times[name][-1]:.3f}s" for name in live if len(times[name]) > round_))
    return times, first, errors


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def best_ours(contenders: dict[str, Any], key: str) -> tuple[str, dict] | tuple[None, None]:
    """Our fastest variant (compiled when it worked and was faster)."""
    ours = {name: result for name, result in contenders.items() if name.startswith("ours")}
    if not ours:
        return None, None
    name = max(ours, key=lambda name: ours[name][key])
    return name, ours[name]


INT8 = "ours_int8"  # our decoder with int8 linears (bench/generate.py): a reference row, not a contender


def decoders(contenders: dict[str, Any]) -> dict[str, Any]:
    """Our KV-cache decoders with the model's own weights (the no-cache and int8 rows are other comparisons)."""
    return {name: result for name, result in contenders.items() if name not in ("ours_nocache", INT8)}


# ----------------------------------------------------------------------------- profiling
def top_ops(fn: Fn, device: torch.device, steps: int, top: int) -> list[dict[str, Any]]:
    """torch.profiler over ``steps`` calls: the ``top`` ops by self time (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()

    def self_us(event) -> float:
        if device.type == "cuda":
            return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))
        return float(event.self_cpu_time_total)

    total = sum(self_us(event) for event in events) or 1.0
    rows = sorted(events, key=self_us, reverse=True)[:top]
    return [
        {"op": event.key, "ms_per_call": self_us(event) / 1e3 / steps, "share": self_us(event) / total,
         "calls": event.count / steps}
        for event in rows
    ]
