"""Zoology's MQAR protocol on PULSE's sweeps: train on a mixture of settings, test on longer ones.

    python tools/recall_table.py --protocol zoology --budget 0.02 --kinds gated_deltanet,kda --dims 128 \\
        --lrs 3.16e-3,1e-2 --batch 64 --parallel 2 --note "2-core CPU"
    python tools/recall_table.py --protocol zoology              # the full protocol (tools/zoology_gpu.sh)
    python tools/recall_table.py --protocol zoology --read-only  # tabulate what OUT holds

As HazyResearch/zoology's `zoology/experiments/mqar_example_configs/original_mqar_configs.py`:
training on (64, 4) × 100k, (128, 8) × 20k and (256, 16 / 32 / 64) × 20k examples each (one
shuffled set, every example padded at its end to 256 tokens), testing on 1,000 examples each of
(64, 4 / 8 / 16), (128, 32), (256, 64), (512, 128) and (1024, 256); vocabulary 8192, learning
rates logspace(−3, −1.5, 4), widths 64 / 128 / 256, batch 256, 32 epochs. `--budget F` scales the
examples of every training setting and the epochs by F (at least one epoch), so the steps scale by
about F²; the table says which budget ran. Differences that stay: the models are PULSE's MQAR
recipes (two layers of the kind; Zoology puts a BaseConv layer before the mixer), cosine schedule
with the recipe's warmup (capped at a tenth of the steps), AdamW with the recipe's weight decay.

Each kind and width is one `pulse sweep` over the learning rates into
OUT/zoology/<kind>/ (a rerun skips finished points); each finished point is then scored on every
test setting (`evaluate_checkpoint` with that setting as its [task]), cached in the point's
zoology-tests.json. The reported learning rate of a kind and width is the one with the best mean
over the test settings. Written: DOCS/zoology.md (accuracy per test setting, mean, state in
elements at the longest test length, params, steps, wall time, machine) and DOCS/zoology.png (the
frontier: accuracy against state at each test setting, one line per kind over its widths).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

TRAIN = [(64, 4, 100_000), (128, 8, 20_000), (256, 16, 20_000), (256, 32, 20_000), (256, 64, 20_000)]
TESTS = [(64, 4), (64, 8), (64, 16), (128, 32), (256, 64), (512, 128), (1024, 256)]
LRS = ",".join(f"{10 ** (-3 + 0.5 * i):.3g}" for i in range(4))  # np.logspace(-3, -1.5, 4)
WIDTHS, EPOCHS, BATCH, TEST_EXAMPLES = "64,128,256", 32, 256, 1_000


def _tool(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"tools_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def budget_plan(budget: float, batch: int) -> dict[str, Any]:
    """Examples per training setting and epochs at `budget` (1 = Zoology's), and the optimizer steps they make."""
    if not 0 < budget <= 1:
        raise ValueError(f"--budget must be in (0, 1], got {budget}")
    mixture = [(seq, pairs, max(1, round(count * budget))) for seq, pairs, count in TRAIN]
    epochs = max(1, round(EPOCHS * budget))
    total = sum(count for _, _, count in mixture)
    return {"mixture": mixture, "epochs": epochs, "examples": total, "batch": batch,
            "steps": math.ceil(total / batch) * epochs}


def train_overrides(plan: dict[str, Any], recipe: Path, test_examples: int) -> list[str]:
    """--set values of every point: the mixture padded to its longest setting, held out at (256, 64)."""
    from pulse.specs.load import read_table

    warmup = int(read_table(recipe).get("train", {}).get("warmup_steps", 0) or 0)
    longest = max(seq for seq, _, _ in plan["mixture"])
    return [f"task.mixture={json.dumps([list(m) for m in plan['mixture']])}", f"task.seq_len={longest}",
            "task.num_kv_pairs=64", f"task.num_test={test_examples}", f"train.steps={plan['steps']}",
            f"train.batch_size={plan['batch']}", f"train.warmup_steps={min(warmup, plan['steps'] // 10)}",
            "train.eval_every=0", f"train.checkpoint_every={plan['steps']}", "train.max_time=10000000"]


def test_scores(point_dir: Path, examples: int, vocab: int) -> dict[str, float]:
    """Accuracy of a finished point at every test setting, from its zoology-tests.json when that has them."""
    from pulse.evaluation.evaluate import evaluate_checkpoint
    from pulse.paths import atomic_write_text

    cache = point_dir / "zoology-tests.json"
    scores = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    for seq, pairs in TESTS:
        key = f"{seq}/{pairs}"
        if key not in scores:
            task = {"kind": "mqar", "vocab_size": vocab, "seq_len": seq, "num_kv_pairs": pairs, "num_test": examples}
            scores[key] = evaluate_checkpoint(point_dir, task=task, device="cpu").metrics["accuracy"]
            atomic_write_text(cache, json.dumps(scores, indent=2) + "\n")
    return {f"{s}/{p}": scores[f"{s}/{p}"] for s, p in TESTS}


def state_at(point_dir: Path, seq: int, pairs: int) -> int:
    """The point's recurrent state in elements at length `seq` (attention's KV cache grows with it)."""
    from pulse.experiments.sweep_report import state_elements
    from pulse.specs.load import load_recipe

    recipe = load_recipe(point_dir / "recipe.json", [f"task.seq_len={seq}", f"task.num_kv_pairs={pairs}",
                                                       "task.mixture=[]"])
    return state_elements(recipe)


def collect(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (kind, width): the learning rate with the best mean test accuracy, and its scores."""
    from pulse.errors import PulseError
    from pulse.experiments.sweep import sweep

    recall = _tool("recall_table")
    try:
        plan = budget_plan(args.budget, args.batch)
    except ValueError as err:
        raise PulseError(str(err)) from None
    rows, notes = [], []
    for kind in recall.kinds_list(args.kinds):
        sweep_dir = Path(args.out) / "zoology" / kind.replace(":", "+").replace(",", "+").replace("=", "-")
        if args.read_only:
            doc = recall.read_sweep(sweep_dir, kind, notes)
        else:
            recipe = recall.kind_recipe(kind, sweep_dir)
            if recipe is None:
                notes.append(f"{kind}: not a registered mixer kind in this checkout, skipped.")
                continue
            grids = [f"train.lr={args.lrs}", f"model.dim={args.dims}"]
            sets = [*train_overrides(plan, recipe, args.test_examples), *args.set]
            result = sweep(recipe, grids, overrides=sets, out=sweep_dir, parallel=args.parallel,
                           say=lambda text, tag=f"[zoology {kind}]": print(tag, text, flush=True))
            doc = json.loads(result.json_path.read_text(encoding="utf-8"))
        if doc is None:
            continue
        rows += best_rows(kind, doc, args, notes, recall)
    return rows, list(dict.fromkeys(notes))


def best_rows(kind: str, doc: dict[str, Any], args: argparse.Namespace, notes: list[str],
              recall: Any) -> list[dict[str, Any]]:
    """Per width, score every finished point on the test settings and keep the best mean."""
    best: dict[str, dict[str, Any]] = {}
    for point in doc["points"]:
        if point.get("status") not in ("trained", "skipped") or point.get("value") is None:
            notes.append(f"{kind} {point['name']}: did not finish ({point.get('status')}).")
            continue
        pdir = Path(point["dir"])
        recipe = json.loads((pdir / "recipe.json").read_text(encoding="utf-8"))
        scores = test_scores(pdir, args.test_examples, recipe["task"]["vocab_size"])
        mean = sum(scores.values()) / len(scores)
        dim = str(recipe["model"]["dim"])
        if dim not in best or mean > best[dim]["mean"]:
            mixture = recipe["task"]["mixture"]
            best[dim] = {"kind": kind, "dim": int(dim), "lr": point["values"]["train.lr"], "scores": scores,
                         "mean": mean, "row": point, "lrs": doc["grids"]["train.lr"], "machine": recall.machine(doc),
                         "examples": sum(m[2] for m in mixture), "batch": recipe["train"]["batch_size"],
                         "states": {f"{s}/{p}": state_at(pdir, s, p) for s, p in TESTS}}
    return sorted(best.values(), key=lambda r: r["dim"])


def markdown(rows: list[dict[str, Any]], notes: list[str], command: str, args: argparse.Namespace) -> str:
    machines = sorted({r["machine"] for r in rows})
    plan = budget_plan(args.budget, args.batch)
    tests = [f"{s}/{p}" for s, p in TESTS]
    lines = [
        "# MQAR on Zoology's protocol", "",
        f"Written by `{command}`." + (f" **{args.note}**" if args.note else ""), "",
        f"Budget {args.budget:g} of Zoology's: {plan['examples']:,} training examples "
        f"({', '.join(f'{s}/{p} × {n:,}' for s, p, n in plan['mixture'])}), {plan['epochs']} epoch(s), batch "
        f"{plan['batch']}, {plan['steps']:,} steps; {args.test_examples:,} test examples per setting. Each row: one "
        "kind and width at the learning rate (of those listed) with the best mean accuracy over the seven test "
        "settings; accuracy at each test setting (seq_len/pairs; training saw lengths up to 256 and up to 64 pairs); "
        "state in elements at the longest test length (attention's KV cache at 1,024 tokens; the recurrent kinds' "
        f"state does not depend on it). Machine: {'; '.join(machines)}.", "",
        "| kind | d | lr | of | " + " | ".join(tests) + " | mean | state (elements) | params | steps | wall time |",
        "| --- | ---: | ---: | --- | " + " | ".join("---:" for _ in tests) + " | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r["kind"], r["dim"])):
        cells = " | ".join(f"{r['scores'][t]:.3f}" for t in tests)
        p = r["row"]
        lines.append(f"| {r['kind']} | {r['dim']} | {r['lr']} | {', '.join(r['lrs'])} | {cells} "
                     f"| **{r['mean']:.3f}** | {r['states'][tests[-1]]:,} | {p['params']:,} | {p['step']}/{p['steps']} "
                     f"| {p['wall_s']:.0f} s |")
    if notes:
        lines += ["", "Not in the table:", "", *(f"- {n}" for n in notes)]
    lines += ["", "![accuracy against state at each test setting](zoology.png)"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Zoology's frontier: one panel per test setting, accuracy against state (log x), a line per kind."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter

    from pulse.paths import atomic_write

    kinds = sorted({r["kind"] for r in rows})
    fig = Figure(figsize=(3.2 * len(TESTS) + 2.2, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(TESTS), sharey=True)
    for ax, (seq, pairs) in zip(axes, TESTS):
        key = f"{seq}/{pairs}"
        for i, kind in enumerate(kinds):
            points = sorted((r["states"][key], r["scores"][key]) for r in rows if r["kind"] == kind)
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="os^Dv<>PX*hp"[i % 12], color=f"C{i % 10}", label=kind, markersize=6)
        ax.set_xscale("log")
        states = [r["states"][key] for r in rows]  # whole decades, labelled at powers of ten only
        ax.set_xlim(10 ** math.floor(math.log10(min(states))), 10 ** math.ceil(math.log10(max(states) * 1.01)))
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{seq} tokens, {pairs} pairs", fontsize=9)
        ax.set_xlabel("state (elements)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False, fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def main(argv: list[str] | None = None) -> int:
    from pulse.paths import atomic_write_text

    recall = _tool("recall_table")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=["zoology"], default="zoology", help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default="attention,gated_deltanet,kda,pulse_routed",
                        help="kinds, or KIND:key=value,… for a kind's settings (then separate kinds with ;)")
    parser.add_argument("--lrs", default=LRS, help=f"learning rates of every sweep (Zoology: {LRS})")
    parser.add_argument("--dims", default=WIDTHS, help=f"model widths (Zoology: {WIDTHS})")
    parser.add_argument("--budget", type=float, default=1.0, help="fraction of Zoology's examples and epochs")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"batch size (Zoology: {BATCH})")
    parser.add_argument("--test-examples", type=int, default=TEST_EXAMPLES, help="examples per test setting")
    parser.add_argument("--set", action="append", default=[], help="a recipe override for every point (repeatable)")
    recall.add_common_arguments(parser, out="runs/recall", docs="zoology.md and zoology.png are")

    def write(rows: list[dict[str, Any]], notes: list[str], command: str, args: argparse.Namespace,
              docs: Path) -> None:
        plot(rows, docs / "zoology.png")
        atomic_write_text(docs / "zoology.md", markdown(rows, notes, command, args))
        print(f"wrote {docs / 'zoology.md'} and {docs / 'zoology.png'} ({len(rows)} rows; {len(notes)} notes)")

    return recall.run_tool(parser, argv, "recall_table", collect, write)


if __name__ == "__main__":
    sys.exit(main())
