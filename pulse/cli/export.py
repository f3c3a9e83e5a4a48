"""`pulse export` (and `pulse convert`, the original name): ONNX export verified by onnxruntime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from pulse.cli.app import app
from pulse.cli.common import SetOption, UnverifiedOption, console, err_console, handle_errors, open_lm
from pulse.errors import PulseError
from pulse.units import fmt_bytes


def _export(source: Path, out: Path, fmt: str, batch: int, tolerance: float, seed: int,
            overrides: list[str] | None, allow_unverified: bool = False, force: bool = False) -> None:
    from pulse.export.onnx import export_onnx, require_onnx

    if fmt not in ("onnx", "hf"):
        raise PulseError(f"unknown export format `{fmt}`; the formats are onnx (a graph for onnxruntime) and hf (a "
                         "Hugging Face Transformers directory).")
    if fmt == "hf":
        return _export_hf(source, out, seed, overrides, allow_unverified, force)
    require_onnx()
    model = open_lm(source, overrides, seed, allow_unverified)
    err_console.print(f"[dim]exporting {source} to ONNX (torch.export, then onnxruntime checks)…[/]", highlight=False)
    start = time.perf_counter()
    report = export_onnx(model, out, batch=batch, tolerance=tolerance, seed=seed)
    elapsed = time.perf_counter() - start
    for n, e in report.errors.items():
        console.print(f"length {n:>5}: max |logits onnx − torch| = {e:.3g}", highlight=False)
    console.print(
        f"wrote {report.path} ({fmt_bytes(report.size_bytes)}): input_ids (batch {report.batch}, any length) → logits; "
        f"max abs error {report.max_error:.3g} ≤ tolerance {report.tolerance:g}; {elapsed:.0f} s", highlight=False,
    )


def _export_hf(source: Path, out: Path, seed: int, overrides: list[str] | None, allow_unverified: bool,
               force: bool) -> None:
    from pulse.hf import require_transformers

    require_transformers()
    from transformers.utils import logging as hf_logging

    from pulse.export.hf import export_hf

    model = open_lm(source, overrides, seed, allow_unverified)
    hf_logging.disable_progress_bar()
    written = export_hf(model, out, force=force)
    console.print(f"wrote {written}: AutoModelForCausalLM.from_pretrained({str(written)!r}) loads it after `import "
                  "pulse` (or with trust_remote_code=True), AutoTokenizer its tokenizer; `pulse generate` and "
                  "`pulse eval` take the directory too", highlight=False)


FormatOpt = Annotated[
    Literal["onnx", "hf"], typer.Option("--format", "-f", help="onnx (a .onnx file) or hf (a Transformers directory).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="hf: if --out holds files, move them aside first.")]
BatchOpt = Annotated[
    int, typer.Option("--batch", min=1, help="Batch size fixed in the exported graph (length stays dynamic).")
]
TolOpt = Annotated[float, typer.Option("--tolerance", min=0.0, help="Largest max-abs logit difference accepted.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for fresh weights from a recipe and for the check inputs.")]


@app.command(aliases=("--model",))
@handle_errors
def export(
    source: Annotated[
        Path, typer.Argument(help="A run or checkpoint directory (or .safetensors file), or a recipe (.toml).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file, or the directory for --format hf.")],
    fmt: FormatOpt = "onnx",
    batch: BatchOpt = 1,
    tolerance: TolOpt = 1e-3,
    seed: SeedOpt = 0,
    set_: SetOption = None,
    allow_unverified: UnverifiedOption = False,
    force: ForceOpt = False,
) -> None:
    """Export to ONNX (the full-sequence forward, dynamic length, checked by onnxruntime) or to a Hugging Face
    Transformers directory (--format hf: AutoModelForCausalLM, AutoTokenizer, lm-evaluation-harness)."""
    _export(source, out, fmt, batch, tolerance, seed, set_, allow_unverified, force)


@app.command()
@handle_errors
def convert(
    input_: Annotated[
        Path, typer.Option("--input", "-i", help="A checkpoint directory (or .safetensors file), or a recipe.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file, or the directory for --format hf.")],
    fmt: FormatOpt = "onnx",
    batch: BatchOpt = 1,
    tolerance: TolOpt = 1e-3,
    seed: SeedOpt = 0,
    set_: SetOption = None,
    allow_unverified: UnverifiedOption = False,
    force: ForceOpt = False,
) -> None:
    """The original PULSE name for `pulse export`: convert --input RUN --output model.onnx --format onnx."""
    _export(input_, output, fmt, batch, tolerance, seed, set_, allow_unverified, force)
