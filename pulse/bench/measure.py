"""One measurement, inside a fresh process: build a system, warm up, time repeats.

A *system* is a whole model from a recipe or a single registered mixer. Modes:
forward (inference, no autograd), train (forward + backward + AdamW step) and
generate (prefill `seq_len` tokens, then time `step` per new token). Memory is the
growth of the process's peak resident set (CPU) or of peak allocated CUDA memory
over what the built model already held — a fresh process makes both meaningful.

# b batch · t time · d model · v vocab
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.bench.machine import sync
from pulse.contract import count_params
from pulse.errors import PulseError

OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory")


def configure(request: dict[str, Any]) -> None:
    """Threads, seed and memory cap for this process, before anything large is allocated."""
    threads = request.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(int(request.get("seed", 0)))
    cap = request.get("max_memory_gb")
    if cap:
        limit_memory(float(cap) * 2**30, request["device"])


def limit_memory(nbytes: float, device: str) -> None:
    """Let this process allocate at most `nbytes` more: address space on CPU, a memory fraction on CUDA."""
    if device.startswith("cuda"):
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, nbytes / total), index)
        return
    status = _proc_status()
    if "VmSize" not in status:
        raise PulseError("--max-memory needs Linux (/proc/self/status) on CPU; drop the option on this system.")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(status["VmSize"] + nbytes)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _proc_status() -> dict[str, int]:
    """Byte-valued fields of /proc/self/status (VmSize, VmRSS, …); empty off Linux."""
    try:
        lines = open("/proc/self/status").read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) * 1024
    return out


def _first_call_growth(model: nn.Module, batch: int, seq_len: int, device: str, dtype: torch.dtype, base: int) -> int:
    """RSS growth of one short forward (16 tokens): the thread pools, library scratch and allocator arenas a
    process sets up on its first call, which do not grow with T. The peak the measurement reports still
    counts from `base`, before this call; `pulse.bench.plan` scales only the rest when it projects a length."""
    with torch.inference_mode():
        model(example(model, batch, min(seq_len, 16), device, dtype))
    return max(0, _proc_status().get("VmRSS", base) - base)


def _peak_rss() -> int:
    """This process's peak resident set: VmHWM where /proc has it, else ru_maxrss.

    Not ru_maxrss on Linux: execve folds the parent's high-water mark into it, so every worker the
    runner spawns would report at least the runner's own resident set as its peak.
    """
    hwm = _proc_status().get("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _reset_peak_rss() -> None:
    """Restart the peak from the current resident set (Linux: 5 written to /proc/self/clear_refs), so the
    peak read after the measurement is the measurement's, not that of importing and building. Where the
    kernel does not offer it, the peak keeps counting from the process start (an overestimate)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def build_system(system: dict[str, Any], device: str, dtype: torch.dtype) -> nn.Module:
    from pulse.assemble import build_mixer, build_model
    from pulse.specs.load import recipe_from_dict

    if system["type"] == "mixer":
        return build_mixer(system["kind"], system["dim"], device=device, dtype=dtype, **system.get("params", {}))
    recipe = recipe_from_dict(system["recipe"], source=system.get("source", "<bench>"))
    return build_model(recipe, device=device, dtype=dtype)


def example(model: nn.Module, batch: int, seq_len: int, device: str, dtype: torch.dtype) -> Tensor:
    """Random input of the system's kind: token ids for a model, activations for a mixer."""
    if callable(getattr(model, "example_input", None)):
        x = model.example_input(batch, seq_len, device=device)
        vocab = getattr(model, "vocab_size", None)
        if not x.is_floating_point() and vocab:
            x = torch.randint(0, vocab, x.shape, device=device, dtype=x.dtype)
        return x
    return torch.randn(batch, seq_len, model.dim, device=device, dtype=dtype)


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Analytic forward FLOPs per token averaged over `seq_len` tokens, as `pulse summarize` counts them."""
    from pulse.summarize import block_costs

    return sum(row.flops_per_token for row in block_costs(model, seq_len=seq_len))


def timed(fn: Callable[[], Any], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _loss(out: Tensor, model: nn.Module) -> Tensor:
    vocab = getattr(model, "vocab_size", None)
    if vocab and out.ndim == 3 and out.shape[-1] == vocab:
        targets = torch.randint(0, vocab, out.shape[:2], device=out.device)
        return F.cross_entropy(out.flatten(0, 1).float(), targets.flatten())
    return out.float().square().mean()


def document_starts(batch: int, seq_len: int, docs: int, device: str) -> Tensor | None:
    """`docs` documents per window: (b, t) bool starts at 0 and docs − 1 seeded random positions, per row."""
    if docs <= 1:
        return None
    if docs > seq_len:
        raise PulseError(f"{docs} documents do not fit a window of {seq_len} tokens; lower --docs-per-window.")
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(batch, seq_len, dtype=torch.bool)
    mask[:, 0] = True
    for row in range(batch):
        mask[row, torch.randperm(seq_len - 1, generator=gen)[: docs - 1] + 1] = True
    return mask.to(device)


def _call(model: nn.Module, x: Tensor, starts: Tensor | None, state: Any = None) -> Any:
    return model(x, state) if starts is None else model(x, state, doc_starts=starts)


def run_forward(model: nn.Module, x: Tensor, req: dict[str, Any], starts: Tensor | None = None) -> list[float]:
    with torch.inference_mode():
        for _ in range(req["warmup"]):
            _call(model, x, starts)
        return [timed(lambda: _call(model, x, starts), req["device"]) for _ in range(req["repeats"])]


def run_train(model: nn.Module, x: Tensor, req: dict[str, Any], starts: Tensor | None = None) -> list[float]:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None

    def step() -> None:
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        out, _ = _call(model, x, starts)
        _loss(out, model).backward()
        if optimizer is not None:
            optimizer.step()

    for _ in range(req["warmup"]):
        step()
    return [timed(step, req["device"]) for _ in range(req["repeats"])]


def run_generate(model: nn.Module, x: Tensor, req: dict[str, Any],
                 starts: Tensor | None = None) -> tuple[list[float], float]:
    """Prefill x (with its document starts), then per repeat the mean seconds per new token over
    `generate_tokens` steps."""
    device, tokens = req["device"], req["generate_tokens"]
    with torch.inference_mode():
        state: Any = None

        def prefill() -> None:
            nonlocal state
            _, state = _call(model, x, starts)

        prefill_s = timed(prefill, device)
        new = example(model, x.shape[0], 1, device, getattr(torch, req["dtype"]))[:, 0]

        def advance(count: int) -> None:
            nonlocal state
            for _ in range(count):
                _, state = model.step(new, state)

        advance(req["warmup"] * tokens)
        times = [timed(lambda: advance(tokens), device) / tokens for _ in range(req["repeats"])]
    return times, prefill_s


def measure(req: dict[str, Any]) -> dict[str, Any]:
    """Time one system at one length; the numbers a report needs, or why it was skipped."""
    device, dtype = req["device"], getattr(torch, req["dtype"])
    seq_len, batch, mode = req["seq_len"], req["batch"], req["mode"]
    out: dict[str, Any] = {"pid": os.getpid(), "seq_len": seq_len, "threads": torch.get_num_threads()}
    from pulse.ops import backend

    # a system's "compile" (from pulse bench --compile) overrides PULSE_COMPILE in this process
    backend.set_compile(req["system"].get("compile"))
    backend.reset_paths()
    try:
        start = time.perf_counter()
        model = build_system(req["system"], device, dtype)
        fpt = flops_per_token(model, seq_len)
        x = example(model, batch, seq_len, device, dtype)
        starts = document_starts(batch, seq_len, req["system"].get("docs_per_window", 0), device)
        out["setup_s"] = time.perf_counter() - start
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(torch.device(device))
            base = torch.cuda.memory_allocated(torch.device(device))
        else:
            _reset_peak_rss()
            base = _proc_status().get("VmRSS", _peak_rss())
            out["memory_fixed_bytes"] = _first_call_growth(model, batch, seq_len, device, dtype, base)
        times, unit, flops = _timed(model, x, req, starts, fpt, out)
        if device.startswith("cuda"):
            memory = torch.cuda.max_memory_allocated(torch.device(device)) - base
            kind = "peak CUDA memory allocated above the built model"
        else:
            memory = _peak_rss() - base
            kind = "peak RSS growth above the built model"
            out["process_peak_rss_bytes"] = _peak_rss()
    except Exception as err:  # out of memory, a refusal, or a bug in a block: recorded, the other lengths go on
        return _failure(out, err)
    # the part of this process's time that grows with T, for projecting longer lengths (pulse.bench.plan)
    per_call = statistics.median(times) * (req["generate_tokens"] if mode == "generate" else 1)
    out["scaling_s"] = (req["warmup"] + req["repeats"]) * per_call + out.get("prefill_s", 0.0)
    return {
        **out,
        "status": "ok",
        "unit": unit,
        "times_s": times,
        "params": count_params(model),
        "flops_per_token": fpt,
        "flops": flops,
        "memory_bytes": max(0, memory),
        "memory_kind": kind,
        "paths": backend.paths_taken(),
        "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _timed(model: Any, x: Any, req: dict[str, Any], starts: Any, fpt: float,
           out: dict[str, Any]) -> tuple[list[float], str, float]:
    """The timings of req's mode, their unit (a batch or a new token) and the FLOPs each one does."""
    batch, seq_len, mode = req["batch"], req["seq_len"], req["mode"]
    if mode == "forward":
        return run_forward(model, x, req, starts), "batch", batch * seq_len * fpt
    if mode == "train":  # backward ≈ twice the forward FLOPs; the optimizer step is not counted
        return run_train(model, x, req, starts), "batch", 3 * batch * seq_len * fpt
    times, out["prefill_s"] = run_generate(model, x, req, starts)
    return times, "token", batch * ((seq_len + 1) * flops_per_token(model, seq_len + 1) - seq_len * fpt)


def _failure(out: dict[str, Any], err: Exception) -> dict[str, Any]:
    """A measurement that did not finish: out of memory or refused (skipped), or a bug (failed, with its traceback)."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)) or (
            isinstance(err, RuntimeError) and any(marker in str(err).lower() for marker in OOM_MARKERS)):
        return {**out, "status": "skipped", "reason": _oom(err), "detail": str(err)[:2000]}
    if isinstance(err, PulseError):
        return {**out, "status": "skipped", "reason": str(err)}
    return {**out, "status": "failed", "reason": f"{type(err).__name__}: {_first_line(err)}",
            "traceback": traceback.format_exc(limit=-8)}


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _oom(err: BaseException) -> str:
    """`out of memory (tried to allocate 4.00 GiB)`: the allocator's size, without its page of advice."""
    found = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ ?[KMGT]i?B)", str(err))
    if found is None:
        return f"out of memory ({_first_line(err, 120)})"
    size = found.group(2) or f"{int(found.group(1)) / 2**30:.4g} GiB"
    return f"out of memory (tried to allocate {size})"
