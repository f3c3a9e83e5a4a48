"""The compile switch: eager is the reference, compiled step functions must equal it."""

from __future__ import annotations

import shutil

import pytest
import torch

import pulse
from pulse import contract
from pulse.ops import backend, scan


@pytest.fixture
def restore_switch():
    yield
    backend.set_compile(None)


def test_auto_compiles_on_cuda_only(monkeypatch, restore_switch):
    monkeypatch.delenv("PULSE_COMPILE", raising=False)
    assert not backend.compile_enabled("cpu") and backend.compile_enabled("cuda")
    monkeypatch.setenv("PULSE_COMPILE", "1")
    assert backend.compile_enabled("cpu")
    monkeypatch.setenv("PULSE_COMPILE", "off")
    assert not backend.compile_enabled("cuda")
    backend.set_compile(True)
    assert backend.compile_enabled("cpu")
    monkeypatch.setenv("PULSE_COMPILE", "sometimes")
    backend.set_compile(None)
    with pytest.raises(pulse.PulseError, match="PULSE_COMPILE"):
        backend.compile_enabled("cpu")


def test_cpu_runs_eager_by_default_and_records_it(monkeypatch):
    monkeypatch.delenv("PULSE_COMPILE", raising=False)
    backend.reset_paths()
    pulse.build_mixer("ntm", 8, memory_slots=4, memory_width=3)(torch.randn(1, 3, 8))
    assert backend.paths_taken()["NTMMemory.token_step"] == "eager"


def test_a_failing_compiled_step_falls_back_to_eager_with_a_warning(restore_switch):
    class Owner:
        def step(self, x):
            return x + 1

    owner = Owner()
    guarded = backend._Guarded("Owner.step", lambda *a: (_ for _ in ()).throw(RuntimeError("no compiler")), Owner.step)
    with pytest.warns(UserWarning, match="Owner.step fell back to the eager path"):
        assert guarded(owner, 1) == 2
    assert backend.paths_taken()["Owner.step"].startswith("eager (compiled failed: RuntimeError: no compiler")
    assert guarded(owner, 2) == 3


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C compiler (inductor's C++ backend); none on PATH")
@pytest.mark.parametrize("kind, params", [
    ("ntm", {"memory_slots": 4, "memory_width": 3}),
    ("pulse", {"gate": "lstm", "num_slots": 2, "chunk_size": 2, "num_heads": 2}),  # the gru/lstm chunk step
    ("sparse_state_attention", {"num_slots": 4, "top_k": 2, "num_heads": 2, "chunk_size": 2}),
    ("hierarchical", {"gate": "lstm", "chunk_size": 2, "num_heads": 2, "token_slots": 2, "chunk_slots": 2,
                      "global_slots": 2}),  # the level update, one graph per level
])
def test_compiled_steps_equal_eager_on_cpu(kind, params, restore_switch):
    # small blocks: inductor's CPU compile takes tens of seconds each on a shared 2-core machine
    torch.manual_seed(0)
    block = pulse.build_mixer(kind, 8, **params)
    x = torch.randn(2, 7, 8, requires_grad=True)  # pulse: three whole chunks and an open one
    backend.set_compile(False)
    ref, _ = block(x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    backend.set_compile(True)
    backend.reset_paths()
    out, _ = block(x)
    (g_out,) = torch.autograd.grad(out.square().sum(), x)
    taken = backend.paths_taken()
    assert any(p == "compiled" for p in taken.values()), taken
    contract.assert_close(out, ref, f"{kind} compiled vs eager")
    contract.assert_close(g_out, g_ref, f"{kind} compiled vs eager gradient")


_ON_CUDA = pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: compiled steps and log-depth carries as a GPU runs them",
))


@pytest.mark.parametrize("device", ["cpu", _ON_CUDA])
@pytest.mark.parametrize("kind, params", [
    ("ntm", {"memory_slots": 4, "memory_width": 3}),
    ("pulse", {"gate": "gru", "num_slots": 2, "chunk_size": 2, "num_heads": 2}),
    ("pulse", {"gate": "lstm", "num_slots": 2, "chunk_size": 2, "num_heads": 2}),
    ("hierarchical", {"chunk_size": 2, "num_heads": 2}),
    ("linear_attention", {"chunk_size": 2, "num_heads": 2, "decay": "input"}),
    ("ssm", {"chunk_size": 2, "d_state": 4}),
    ("mamba2", {"chunk_size": 2, "num_heads": 2, "d_state": 4}),
    ("gated_deltanet", {"chunk_size": 2, "num_heads": 2, "head_dim": 4}),
    ("deltanet", {"chunk_size": 2, "num_heads": 2, "head_dim": 4}),
    ("sparse_state_attention", {"num_slots": 4, "top_k": 2, "num_heads": 2, "chunk_size": 2}),
])
def test_gpu_paths_equal_the_cpu_reference(kind, params, device, monkeypatch, restore_switch):
    """The reference: the CPU, eager, chunk carries as a loop. On CUDA, PULSE_COMPILE=auto compiles the
    step functions and the carries run in log depth; on the CPU the log-depth carries are forced (the
    compiled steps have their own CPU test above; compiling all of these on a CPU takes minutes).
    fla is off: tests/test_backend_fla.py compares it with its own tolerances."""
    monkeypatch.delenv("PULSE_COMPILE", raising=False)
    monkeypatch.setenv("PULSE_FLA", "0")
    torch.manual_seed(0)
    block = pulse.build_mixer(kind, 8, **params)
    x = torch.randn(2, 37, 8, requires_grad=True)
    ref, _ = block(x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    carries: list[str] = []
    resolve = scan.resolve

    def watched(method, where):
        carries.append(resolve(method, where) if device == "cuda" else "log")
        return carries[-1]

    monkeypatch.setattr(scan, "resolve", watched)
    block_on, x_on = block.to(device), x.detach().to(device).requires_grad_(True)
    out, _ = block_on(x_on)
    (g_out,) = torch.autograd.grad(out.square().sum(), x_on)
    contract.assert_close(out.cpu(), ref, f"{kind} on {device}, GPU paths, vs the CPU reference")
    contract.assert_close(g_out.cpu(), g_ref, f"{kind} on {device}, GPU paths, vs the CPU reference: gradient")
    if kind in ("linear_attention", "ssm", "mamba2", "gated_deltanet", "deltanet"):
        assert carries and set(carries) == {"log"}, carries
