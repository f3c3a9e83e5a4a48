"""ONNX export of a language model's full-sequence forward (token ids → logits), checked by onnxruntime.

The graph is captured with torch.export (non-strict) with a dynamic sequence axis and
translated by torch.onnx (dynamo=True). Chunk-recurrent PULSE layers take an export path
while torch.export traces them (ChunkRecurrentMixer._forward_export): the sequence is padded
to whole chunks inside the graph and the chunk recurrence becomes one ONNX Scan, so the
exported model accepts any length. The batch size is fixed at export time (the scan's
shape arithmetic does not translate with a symbolic batch). Every export is verified
before the file is written: onnxruntime and torch run the same random ids at two lengths
that differ from the traced one, and the largest absolute difference of the logits must
stay under a tolerance. A failure names the blocks that cannot be exported.

# b batch · t time · v vocab
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pulse.errors import PulseError
from pulse.paths import atomic_write

INSTALL = 'install the optional extra pulse[onnx] (onnx, onnxruntime, onnxscript): pip install -e ".[onnx]"'


@dataclass
class ExportReport:
    """What an export wrote and how closely onnxruntime reproduced torch."""

    path: Path
    batch: int
    traced_len: int
    errors: dict[int, float] = field(default_factory=dict)  # sequence length → max |logits_onnx − logits_torch|
    tolerance: float = 1e-3
    size_bytes: int = 0

    @property
    def max_error(self) -> float:
        return max(self.errors.values())


class Logits(nn.Module):
    """ids (b, t) → logits (b, t, v) of a LanguageModel from a fresh state: the graph that is exported.

    LanguageModel.forward without its id-range check (a branch on values, which torch.export
    cannot trace) and with every layer's state None, so PULSE layers take their export path.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, ids: Tensor) -> Tensor:
        lm = self.lm
        fresh = {"pos": 0, "layers": [None] * len(lm.layers)}  # None: each layer starts the sequence
        h, _ = lm.stack.run(lm.embed(ids), fresh)  # (b, t, d)
        return lm.head(h)


def require_onnx() -> None:
    """Raise PulseError unless onnx, onnxruntime and onnxscript can be imported."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise PulseError(f"ONNX export needs {', '.join(missing)}, which is not installed; {INSTALL}.")


def language_model(model: nn.Module) -> nn.Module:
    """The LanguageModel inside a PulseForCausalLM (or the model itself); PulseError for other models."""
    from pulse.models.lm import LanguageModel

    inner = getattr(model, "model", model)
    if not isinstance(inner, LanguageModel):
        raise PulseError(
            f"ONNX export covers language models (token ids → logits, [model] kind = \"lm\"); got "
            f"{type(inner).__name__}. Export a recipe or checkpoint whose model kind is lm."
        )
    return inner


def lengths_for(lm: nn.Module) -> tuple[int, tuple[int, int]]:
    """A traced length and two check lengths: several chunks (not a multiple of the chunk) and less than one."""
    chunk = max((getattr(layer.mixer, "chunk_size", 1) for layer in lm.layers), default=1)
    chunk = max(chunk, 4)
    return 2 * chunk + 3, (chunk - 1, 3 * chunk + 5)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    batch: int = 1,
    tolerance: float = 1e-3,
    check_lens: tuple[int, ...] | None = None,
    seed: int = 0,
) -> ExportReport:
    """Export `model` (a PulseForCausalLM or LanguageModel) to `path` and verify it; returns the report.

    The file appears only after onnxruntime matched torch within `tolerance` (max abs logit
    difference) at every check length; otherwise PulseError, and nothing is written.
    """
    require_onnx()
    if batch < 1:
        raise PulseError(f"batch must be ≥ 1, got {batch}.")
    path = Path(path)
    if path.suffix != ".onnx":
        raise PulseError(f"the output file should end in .onnx, got {path}; e.g. --out model.onnx.")
    lm = language_model(model)
    if next(lm.parameters()).device.type == "meta":
        raise PulseError("the model lives on the meta device and has no weights to export; build it on a real device.")
    wrapper = Logits(lm).eval()
    traced_len, default_checks = lengths_for(lm)
    check_lens = tuple(check_lens or default_checks)
    gen = torch.Generator().manual_seed(seed)
    device = next(lm.parameters()).device
    example = torch.randint(0, lm.vocab_size, (batch, traced_len), generator=gen).to(device)
    program = _onnx_program(wrapper, example)
    report = ExportReport(path=path, batch=batch, traced_len=traced_len, tolerance=tolerance)
    def write(tmp: str) -> None:
        program.save(tmp, external_data=False)
        report.errors = _verify(wrapper, tmp, lm.vocab_size, batch, check_lens, gen, device)
        if report.max_error > tolerance or report.max_error != report.max_error:
            worst = ", ".join(f"length {n}: {e:.3g}" for n, e in report.errors.items())
            raise PulseError(
                f"onnxruntime's logits differ from torch's by more than the tolerance {tolerance:g} ({worst}); "
                f"{_culprits(lm)} Nothing was written to {path}."
            )
        report.size_bytes = Path(tmp).stat().st_size

    atomic_write(path, write)  # the one writer: temporary file, checked, renamed; a full disk is one clear error
    return report


def _onnx_program(wrapper: Logits, example: Tensor) -> Any:
    """torch.export (dynamic length) then torch.onnx; a PulseError names the blocks that failed."""
    import logging
    import warnings

    # the exporter logs one line per torchvision op it cannot register; PULSE models use none of them
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    seq = torch.export.Dim.AUTO
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(wrapper, (example,), dynamic_shapes=({1: seq},), strict=False)
    except PulseError:
        raise
    except Exception as err:  # torch.export raises many types; all mean "this graph cannot be captured"
        raise PulseError(
            f"torch.export could not trace the model ({_first_line(err)}); "
            f"{_culprits(wrapper.lm, err)}"
        ) from err
    if not _length_is_dynamic(exported):
        raise PulseError(
            "while tracing, the sequence length became a constant, so the exported model would accept one length "
            f"only; {_culprits(wrapper.lm)}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(exported, (example,), dynamo=True, input_names=["input_ids"],
                                     output_names=["logits"], verbose=False, optimize=True)
    except Exception as err:
        raise PulseError(
            f"torch.onnx could not translate the traced model ({_first_line(err)}); "
            f"{_culprits(wrapper.lm, err)}"
        ) from err


def _length_is_dynamic(exported: Any) -> bool:
    inputs = [n for n in exported.graph.nodes if n.op == "placeholder"]
    val = inputs[-1].meta.get("val")
    return val is not None and not isinstance(val.shape[1], int)


def _verify(wrapper: Logits, onnx_path: str, vocab: int, batch: int, lengths: tuple[int, ...],
            gen: torch.Generator, device: torch.device) -> dict[int, float]:
    """Max abs logit difference between onnxruntime and torch at each length, on random ids."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    errors: dict[int, float] = {}
    for n in lengths:
        ids = torch.randint(0, vocab, (batch, n), generator=gen)
        with torch.no_grad():
            expected = wrapper(ids.to(device)).float().cpu().numpy()
        try:
            (got,) = session.run(["logits"], {"input_ids": ids.numpy()})
        except Exception as err:
            raise PulseError(
                f"onnxruntime could not run the exported model at length {n} ({_first_line(err)}); "
                f"{_culprits(wrapper.lm)}"
            ) from err
        if got.shape != expected.shape:
            raise PulseError(
                f"the exported model gave logits of shape {got.shape} at length {n}, expected {expected.shape}."
            )
        errors[n] = float(np.abs(got - expected).max())
    return errors


EXPORTED = ("CausalSelfAttention", "PulseLayer")


def _culprits(lm: nn.Module, err: BaseException | None = None) -> str:
    """A sentence naming the blocks most likely at fault: those in the traceback, else those not known to export."""
    layers = list(lm.layers)
    named: list[str] = []
    if err is not None:
        tb = err.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and type(owner).__module__.startswith("pulse.blocks"):
                for i, layer in enumerate(layers):
                    if any(m is owner for m in layer.modules()):
                        label = f"layers.{i} ({type(layer.mixer).__name__})"
                        if label not in named:
                            named.append(label)
            tb = tb.tb_next
    if not named:
        named = [f"layers.{i} ({type(layer.mixer).__name__})" for i, layer in enumerate(layers)
                 if type(layer.mixer).__name__ not in EXPORTED]
    if named:
        return (f"the block{'s' if len(named) > 1 else ''} {', '.join(named)} cannot be exported with a dynamic "
                f"sequence axis; blocks known to export: {', '.join(EXPORTED)} (gates gru, lstm and "
                f"mingru, with a StateManager or allocator). "
                "Change those layers' kinds (or gates) in the recipe to export.")
    return "this is a bug in the export path of blocks that normally export; please report it with the recipe."


def _first_line(err: BaseException) -> str:
    """The first line of the innermost cause's message, without terminal colour codes."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__
