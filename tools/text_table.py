"""Held-out bits per byte of the Transformer, the hybrid and pure PULSE, byte-level and with a BPE, one command.

    python tools/text_table.py                       # run the sweeps into runs/text/, write docs/text.md
    python tools/text_table.py --read-only           # tabulate the sweeps already there, train nothing
    python tools/text_table.py --tokenizers bytes --lrs 1e-3,3e-3,6e-3 --set train.steps=400 --note "…"

Each model is one `pulse sweep` over the learning rates (a rerun skips finished points and
resumes unfinished ones) into OUT/<model>/ (byte-level) or OUT/<model>-bpe-<N>/, all with the
same task (the `text` task of recipes/text-hybrid.toml: by default the Python standard
library's sources, validation on held-out documents), the same steps and batch, and parameter
counts within 10 % of each other for one tokenizer:

- transformer: recipes/text-hybrid.toml with `model.layout=["attn"]`;
- hybrid: recipes/text-hybrid.toml as shipped (PULSE delta-rule slot layers + one attention layer in three);
- pulse: recipes/text-pulse.toml (PULSE layers only).

`--tokenizers bytes,bpe-8192`: `bpe-N` is a byte-level BPE of N ids learned from the training
split of the same corpus only (`pulse tokenizer train --recipe`), kept as OUT/bpe-N.json; its
sweeps set task.tokenizer to it and model.vocab_size = N. Bits per byte (summed nats over the
UTF-8 bytes of the held-out text, / ln 2) compare the two tokenizers on one figure.

Written: DOCS/text.md, the best point of each sweep (bits per byte, lr, params, recurrent
state at the task's length, steps, wall time, machine), the corpus the sweeps actually read,
and how far each trails the Transformer with the same tokenizer; every point of every sweep
stays in its sweep.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pulse.data.bpe import train_bpe, write_tokenizer
from pulse.data.readers import describe
from pulse.errors import PulseError
from pulse.experiments.sweep import sweep
from pulse.experiments.sweep_report import best_row
from pulse.paths import atomic_write_text
from pulse.specs.load import load_recipe
from recall_table import add_common_arguments, machine, read_sweep, run_tool

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
MODELS = {  # name → (recipe, overrides, description)
    "transformer": ("text-hybrid.toml", ['model.layout=["attn"]'], "Transformer: 3 rotary attention layers"),
    "hybrid": ("text-hybrid.toml", [], "hybrid: pulse (delta) + pulse (delta) + attention"),
    "pulse": ("text-pulse.toml", [], "pure PULSE: 3 pulse (delta) layers, no attention"),
}


def tokenizer_overrides(name: str, out: Path, sets: list[str]) -> list[str]:
    """The overrides that make a sweep use tokenizer `name` (bytes: none), training the BPE first if needed."""
    if name == "bytes":
        return []
    if not name.startswith("bpe-") or not name[4:].isdigit():
        raise PulseError(f"--tokenizers: {name!r} is neither `bytes` nor `bpe-N` (N ids, e.g. bpe-8192).")
    vocab = int(name[4:])
    path = (out / f"{name}.json").resolve()
    if not path.is_file():
        spec = load_recipe(RECIPES / "text-hybrid.toml", sets).task
        print(f"[{name}] learning the tokenizer from the training split of {describe(spec)}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        write_tokenizer(train_bpe([], vocab_size=vocab, spec=spec), path)
    return [f"task.tokenizer={json.dumps(str(path))}", f"model.vocab_size={vocab}"]


def collect(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    rows, notes = [], []
    for tok in [t.strip() for t in args.tokenizers.split(",") if t.strip()]:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name not in MODELS:
                raise PulseError(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}.")
            recipe, sets, description = MODELS[name]
            sweep_dir = Path(args.out) / (name if tok == "bytes" else f"{name}-{tok}")
            if args.read_only:
                doc = read_sweep(sweep_dir, f"{name} ({tok})", notes)
                if doc is None:
                    continue
            else:
                extra = tokenizer_overrides(tok, Path(args.out), args.set)
                result = sweep(RECIPES / recipe, [f"train.lr={args.lrs}"], overrides=[*sets, *args.set, *extra],
                               out=sweep_dir, parallel=args.parallel,
                               say=lambda text, tag=f"[{name} {tok}]": print(tag, text, flush=True))
                doc = json.loads(result.json_path.read_text(encoding="utf-8"))
            best = best_row(doc["points"], doc["higher_is_better"])
            if best is None:
                notes.append(f"{name} ({tok}): no point of the sweep in {sweep_dir} finished.")
                continue
            corpus = describe(load_recipe(RECIPES / recipe, [o for o in doc["overrides"]
                                                             if not o.startswith(("model.", "task.tokenizer"))]).task)
            rows.append({"name": name, "tokenizer": tok, "description": description, "recipe": recipe, "row": best,
                         "lrs": doc["grids"]["train.lr"], "machine": machine(doc), "load": doc.get("load_at_start"),
                         "overrides": doc["overrides"], "corpus": corpus})
    return rows, notes


def markdown(rows: list[dict[str, Any]], notes: list[str], command: str, note: str | None) -> str:
    machines = sorted({r["machine"] for r in rows})
    corpora = sorted({r["corpus"] for r in rows})
    loads = [r["load"] for r in rows if r["load"] is not None]
    base = {r["tokenizer"]: r["row"]["value"] for r in rows if r["name"] == "transformer"}
    lines = [
        "# Text: Transformer, hybrid and pure PULSE, byte-level and BPE", "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}." + (f" **{note}**" if note else ""),
        "",
        f"Held-out bits per byte (validation on documents never trained on) of {'; '.join(corpora)}: summed nats over "
        "the UTF-8 bytes of the held-out text, / ln 2, so the byte tokenizer and the BPE (learned from the training "
        "split only) compare on one figure. Context: the task's seq_len in tokens (a BPE token holds several bytes). "
        "The same steps and batch for every model, parameters within 10 % of each other for one tokenizer. Each row "
        "is the best point of a learning-rate sweep "
        f"({', '.join(sorted({lr for r in rows for lr in r['lrs']}, key=float))}); every point is in the sweep's "
        "sweep.md. State: the recurrent state per sequence at the task's length in elements (attention counts its "
        "KV cache). Machine: " + "; ".join(machines) + "."
        + (f" Load average when the sweeps started: {min(loads):.1f}–{max(loads):.1f}." if loads else ""), "",
        "| model | tokenizer | recipe | params | state (elements) | bits/byte | vs Transformer | best lr | steps "
        "| wall time |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        b = r["row"]
        ref = base.get(r["tokenizer"])
        rel = "" if ref is None or r["name"] == "transformer" else f"{100 * (b['value'] / ref - 1):+.1f} %"
        recipe = r["recipe"] + (
            " " + " ".join(f"`--set {s}`" for s in MODELS[r["name"]][1]) if MODELS[r["name"]][1] else ""
        )
        lines.append(f"| {r['description']} | {r['tokenizer']} | {recipe} | {b['params']:,} | {b['state_elements']:,} "
                     f"| {b['value']:.4f} | {rel} | {b['values']['train.lr']} | {b['step']}/{b['steps']} "
                     f"| {b['wall_s']:.0f} s |")
    if rows:
        shared = [o for o in rows[0]["overrides"] if not o.startswith(("model.", "task.tokenizer"))]
        lines += ["", "Overrides of every sweep: " + (", ".join(f"`{o}`" for o in shared) or "none") + "; a BPE "
                  "sweep adds `task.tokenizer` (the learned file) and `model.vocab_size` = its ids."]
    if notes:
        lines += ["", "Not in the table:", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"models to compare ({', '.join(MODELS)})")
    parser.add_argument("--lrs", default="1e-3,3e-3,6e-3", help="learning rates of each sweep")
    parser.add_argument("--tokenizers", default="bytes,bpe-8192", help="bytes and/or bpe-N (a BPE of N ids)")
    parser.add_argument("--set", action="append", default=[], help="a recipe override for every sweep (repeatable)")
    add_common_arguments(parser, out="runs/text", docs="text.md is")

    def write(rows: list[dict[str, Any]], notes: list[str], command: str, args: argparse.Namespace,
              docs: Path) -> None:
        atomic_write_text(docs / "text.md", markdown(rows, notes, command, args.note))
        print(f"wrote {docs / 'text.md'} ({len(rows)} rows; {len(notes)} notes)")

    return run_tool(parser, argv, "text_table", collect, write)


if __name__ == "__main__":
    sys.exit(main())
