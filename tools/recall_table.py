"""Recall vs recurrent state: the best MQAR accuracy of a learning-rate sweep, per kind, as a table and a plot.

    python tools/recall_table.py                  # run the sweeps into runs/recall/, write docs/recall.{md,png}
    python tools/recall_table.py --read-only      # tabulate the sweeps already there, train nothing
    python tools/recall_table.py --settings 128/8 --kinds attention,pulse --lrs 1e-3,3e-3 --parallel 2 \\
        --note "2-core CPU shared with other jobs"
    python tools/recall_table.py --settings 128/8,256/16 --kinds pulse_delta --curriculum  # 256/16 from 128/8's best
    python tools/recall_table.py --settings 128/8,256/16 --curriculum --set 256/16:train.lr=1e-3,3e-3  # a stage's grid
    python tools/recall_table.py --protocol zoology --budget 0.02 …  # Zoology's protocol: tools/zoology.py

For each MQAR setting (seq_len/num_kv_pairs) and each kind, one `pulse sweep` over the
learning rates (and over model widths with --dims, which gives several state sizes
per kind, as in Zoology's figure) into OUT/mqar-<seq>-<pairs>/<kind>/. A rerun skips
finished points and resumes unfinished ones. A kind with a shipped recipe uses it:
recipes/mqar-<kind>.toml (`attention`, `pulse` — pure, no attention layer — `pulse_delta` —
pure, kind `pulse_delta` — `hybrid`, `gated_deltanet`, `mamba2`; all share the task and the training budget). Any other
name is a registered mixer kind put in both layers of mqar-attention.toml with its
default settings, or those of KIND:key=value,… (`pulse_routed:num_memories=3,top_k=1`; list such kinds with
`;` between them) (without the rotary positions only attention applies), and is
skipped with a note when this checkout does not register it.

Written: DOCS/recall.md (best accuracy per kind, setting and width, with the recurrent
state in elements at the task's seq_len — the blocks' own state_numel, attention's KV
cache included — parameters, steps, wall time and the machine) and DOCS/recall.png
(accuracy against state size, log x axis, one panel per setting, one marker per kind).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pulse import registry
from pulse.errors import PulseError
from pulse.experiments.sweep import sweep
from pulse.experiments.sweep_report import best_row
from pulse.paths import atomic_write, atomic_write_text
from pulse.specs.load import read_table

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
KINDS = "attention,pulse,pulse_delta,hybrid,linear_attention,ssm,gated_deltanet,mamba2"
MARKERS = "os^Dv<>PX*hp"


def parse_settings(text: str) -> list[tuple[int, int]]:
    """`128/8,256/16` → [(128, 8), (256, 16)]."""
    try:
        pairs = [tuple(int(x) for x in item.split("/")) for item in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise PulseError(f"--settings `{text}`: expected SEQ_LEN/NUM_KV_PAIRS,…, e.g. --settings 128/8,256/16.")
    return pairs


def overrides_for(sets: list[str], seq: int, pairs: int) -> list[str]:
    """The --set overrides of one setting: plain ones apply everywhere, `SEQ/PAIRS:KEY=VALUE` only there."""
    chosen = []
    for item in sets:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:
            (s, p), = parse_settings(head)
            if (s, p) == (seq, pairs):
                chosen.append(rest)
        else:
            chosen.append(item)
    return chosen


def split_kind(kind: str) -> tuple[str, dict[str, Any]]:
    """`pulse_routed:num_memories=3,top_k=1` → ("pulse_routed", {"num_memories": 3, "top_k": 1}); values as TOML."""
    import tomllib

    name, _, rest = kind.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise PulseError(f"--kinds `{kind}`: expected KIND:key=value,…, e.g. pulse_routed:num_memories=3,top_k=1.")
        try:
            params[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            params[key.strip()] = value.strip()
    return name.strip(), params


def kinds_list(text: str) -> list[str]:
    """--kinds: names separated by commas, or by `;` when any carries settings (KIND:key=value,…)."""
    return [k.strip() for k in text.split(";" if ":" in text else ",") if k.strip()]


def kind_recipe(kind: str, sweep_dir: Path) -> Path | None:
    """recipes/mqar-<kind>.toml, else mqar-attention.toml with both layers of this registered mixer kind (with the
    settings of KIND:key=value,… when given)."""
    name, params = split_kind(kind)
    shipped = RECIPES / f"mqar-{name.replace('_', '-')}.toml"
    if shipped.is_file() and not params:
        return shipped
    if name not in registry.kinds("mixer"):
        return None
    data = read_table(RECIPES / "mqar-attention.toml")
    # rotary positions live inside attention layers; a recurrent mixer orders tokens itself (as mqar-pulse.toml)
    model = {k: v for k, v in data["model"].items() if k != "positions" or name == "attention"}
    data["model"] = {**model, "layout": [name], "mixers": {name: {"kind": name, **params}}}
    path = sweep_dir / "recipe.json"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def stage_lrs(sets: list[str], default: str) -> tuple[str, list[str]]:
    """The learning-rate grid of one setting and its other overrides: a `train.lr=…` among the setting's --set
    (`SEQ/PAIRS:train.lr=1e-3,3e-3`) is that stage's own grid; otherwise --lrs."""
    grid = [item.split("=", 1)[1] for item in sets if item.split("=", 1)[0].strip() == "train.lr"]
    rest = [item for item in sets if item.split("=", 1)[0].strip() != "train.lr"]
    return (grid[-1] if grid else default), rest


def best_points(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The best point of each model width in one sweep (the learning rate is what is swept away)."""
    widths: dict[str | None, list[dict[str, Any]]] = {}
    for row in doc["points"]:
        widths.setdefault(row["values"].get("model.dim"), []).append(row)
    return [best for rows in widths.values() if (best := best_row(rows, doc["higher_is_better"])) is not None]


def machine(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return (f"{m['device_name']} ({m['device']}), {m['logical_cpus']} CPUs, {doc['workers']} worker(s) × "
            f"{doc['threads']} threads, torch {m['torch']}")


def collect(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """Run (or read) every sweep; one entry per (setting, kind, width) with its best point, and the notes.

    With --curriculum, each setting after the shortest starts each kind from that kind's best point at the
    setting before it (`train.init_from`), in OUT/mqar-<seq>-<pairs>/<kind>+from-<seq>-<pairs>/; --read-only
    tabulates those sweeps beside the from-scratch ones whenever they exist."""
    entries, notes = [], []
    before: dict[str, dict[str, Any]] = {}  # kind → its best entry at the previous setting
    for seq, pairs in sorted(parse_settings(args.settings)):
        best_here: dict[str, dict[str, Any]] = {}
        for kind in kinds_list(args.kinds):
            root = Path(args.out) / f"mqar-{seq}-{pairs}"
            runs: list[tuple[Path, dict[str, Any] | None]] = []
            if args.read_only:
                runs.append((root / kind, None))
                for start in sorted(root.glob(f"{kind}+from-*")):
                    source = json.loads((start / "curriculum.json").read_text(encoding="utf-8")) \
                        if (start / "curriculum.json").is_file() else None
                    runs.append((start, source))
            elif args.curriculum and kind in before:
                prev = before[kind]
                source = {"setting": prev["setting"], "dir": prev["row"]["dir"],
                          "lr": prev["row"]["values"]["train.lr"], "step": prev["row"]["step"],
                          "wall_s": prev["row"]["wall_s"], "value": prev["row"]["value"]}
                start = root / f"{kind}+from-{prev['setting'].replace('/', '-')}"
                start.mkdir(parents=True, exist_ok=True)
                atomic_write_text(start / "curriculum.json", json.dumps(source, indent=2) + "\n")
                runs.append((start, source))
            else:
                runs.append((root / kind, None))
            for sweep_dir, source in runs:
                label = kind if source is None else f"{kind} (from {source['setting']})"
                if args.read_only:
                    doc = read_sweep(sweep_dir, f"{label} at {seq}/{pairs}", notes)
                    if doc is None:
                        continue
                else:
                    recipe = kind_recipe(kind, sweep_dir)
                    if recipe is None:
                        notes.append(f"{kind}: not a registered mixer kind in this checkout, skipped "
                                     f"(registered: {', '.join(registry.kinds('mixer'))}).")
                        continue
                    lrs, sets = stage_lrs(overrides_for(args.set, seq, pairs), args.lrs)
                    grids = [f"train.lr={lrs}", *([f"model.dim={args.dims}"] if args.dims else [])]
                    sets = [f"task.seq_len={seq}", f"task.num_kv_pairs={pairs}", *sets,
                            *([f"train.init_from={source['dir']}"] if source else [])]
                    result = sweep(recipe, grids, overrides=sets, out=sweep_dir, parallel=args.parallel,
                                   say=lambda text, tag=f"[{label} {seq}/{pairs}]": print(tag, text, flush=True))
                    doc = json.loads(result.json_path.read_text(encoding="utf-8"))
                best = best_points(doc)
                if not best:
                    notes.append(f"{label} at {seq}/{pairs}: no point of the sweep in {sweep_dir} finished.")
                for row in best:
                    dim = json.loads((Path(row["dir"]) / "recipe.json").read_text(encoding="utf-8"))["model"]["dim"]
                    entry = {"setting": f"{seq}/{pairs}", "seq_len": seq, "kind": label, "dim": dim, "row": row,
                             "load": doc.get("load_at_start"), "from": source,
                             "lrs": doc["grids"]["train.lr"], "machine": machine(doc), "sweep": str(sweep_dir)}
                    entries.append(entry)
                    if source is None and (kind not in best_here or _better(row, best_here[kind]["row"], doc)):
                        best_here[kind] = entry
        before = best_here
    return entries, list(dict.fromkeys(notes))


def _better(row: dict[str, Any], other: dict[str, Any], doc: dict[str, Any]) -> bool:
    return row["value"] > other["value"] if doc["higher_is_better"] else row["value"] < other["value"]


def _load_line(entries: list[dict[str, Any]]) -> str:
    """The machine's load average when the sweeps started: other jobs slow wall times down."""
    loads = [e["load"] for e in entries if e.get("load") is not None]
    return f" Load average when the sweeps started: {min(loads):.1f}–{max(loads):.1f}." if loads else ""


def markdown(entries: list[dict[str, Any]], notes: list[str], command: str, note: str | None) -> str:
    machines = sorted({e["machine"] for e in entries})
    one = len(machines) == 1
    lines = [
        "# MQAR recall against recurrent state", "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}."
        + (f" **{note}**" if note else ""), "",
        "Each row is the best held-out accuracy over the learning rates tried (column `of`: a sweep where it "
        "lists several, one rate where it lists one) for one kind at one MQAR setting (seq_len/num_kv_pairs) and "
        "width. State: the recurrent state per sequence in elements at the "
        "task's seq_len (each block's `state_numel`; attention counts its KV cache, 2·t·d per layer). Steps, wall "
        "time: of the best point. A kind marked (from S) is a length curriculum (--curriculum): every point of "
        "its sweep started from that kind's best weights at setting S, so its steps and wall time add S's. Every "
        "point of every sweep is in its sweep.md."
        + (f" Machine: {machines[0]}." if one else "") + _load_line(entries), "",
        "| setting | kind | d | accuracy | best lr | of | state (elements) | params | steps | wall time |"
        + ("" if one else " machine |"),
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |" + ("" if one else " --- |"),
    ]
    for e in sorted(entries, key=lambda e: (e["seq_len"], e["kind"], e["row"]["state_elements"])):
        r = e["row"]
        src = e.get("from")
        steps = f"{r['step']}/{r['steps']}" + (f" + {src['step']} at {src['setting']}" if src else "")
        wall = f"{r['wall_s']:.0f} s" + (f" + {src['wall_s']:.0f} s at {src['setting']}" if src else "")
        lines.append(f"| {e['setting']} | {e['kind']} | {e['dim']} | {r['value']:.4f} | {r['values']['train.lr']} "
                     f"| {', '.join(e['lrs'])} | {r['state_elements']:,} | {r['params']:,} | {steps} | {wall} |"
                     + ("" if one else f" {e['machine']} |"))
    if notes:
        lines += ["", "Not in the table:", "", *(f"- {n}" for n in notes)]
    lines += ["", "![accuracy against recurrent state size](recall.png)", "",
              "Zoology's protocol (train on a mixture of settings, test on longer ones): zoology.md "
              "(`python tools/recall_table.py --protocol zoology`)."]
    return "\n".join(lines) + "\n"


def plot(entries: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against state elements (log x), one panel per setting, one marker and colour per kind."""
    import math

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter

    settings = sorted({(e["seq_len"], e["setting"]) for e in entries})
    kinds = sorted({e["kind"] for e in entries})
    fig = Figure(figsize=(4.8 * max(len(settings), 1) + 1.8, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(settings), 1), squeeze=False, sharey=True)[0]
    colours = [f"C{i}" for i in range(10)]
    for ax, (_, setting) in zip(axes, settings):
        for i, kind in enumerate(kinds):
            points = sorted((e["row"]["state_elements"], e["row"]["value"]) for e in entries
                            if e["setting"] == setting and e["kind"] == kind)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], color=colours[i % 10], markersize=8, alpha=0.85,
                        markeredgecolor="white", markeredgewidth=0.8,
                        linewidth=1.2, label=kind)
        ax.set_xscale("log")
        # whole decades on the x axis, labelled at powers of ten only (Zoology's figure)
        states = [e["row"]["state_elements"] for e in entries if e["setting"] == setting]
        ax.set_xlim(10 ** math.floor(math.log10(min(states))), 10 ** math.ceil(math.log10(max(states) * 1.01)))
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"MQAR {setting} (seq_len/pairs)")
        ax.set_xlabel("recurrent state size (elements)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("accuracy (best of LR sweep)")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def read_sweep(sweep_dir: Path, what: str, notes: list[str]) -> dict[str, Any] | None:
    """The sweep.json in sweep_dir, or None with a note that `what` has no sweep there."""
    if not (sweep_dir / "sweep.json").is_file():
        notes.append(f"{what}: no sweep in {sweep_dir} (run without --read-only).")
        return None
    return json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))


def add_common_arguments(parser: argparse.ArgumentParser, *, out: str, docs: str) -> None:
    """The options every table tool shares: where sweeps and docs live, the note, --read-only."""
    parser.add_argument("--parallel", type=int, default=1, help="points trained at once per sweep")
    parser.add_argument("--out", default=out, help="where the sweeps live")
    parser.add_argument("--docs", default="docs", help=f"where {docs} written")
    parser.add_argument("--note", default=None, help="a line about the machine's load, printed under the title")
    parser.add_argument("--read-only", action="store_true", help="tabulate existing sweeps; train nothing")


def run_tool(parser: argparse.ArgumentParser, argv: list[str] | None, tool: str, collect_rows: Any,
             write: Any) -> int:
    """Parse, collect (rows, notes), write them into --docs with write(rows, notes, command, args, docs).
    Exit 2 with the error when collecting fails or finds no finished point."""
    args = parser.parse_args(argv)
    command = shlex.join(["python", f"tools/{tool}.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        rows, notes = collect_rows(args)
        if not rows:
            raise PulseError("no sweep has a finished point to tabulate: " + " ".join(notes))
    except PulseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C / SIGTERM: the run in flight saved its checkpoint (pulse.train.stop)
        print(f"interrupted: {err or 'stopped'}; run the same command again to continue.", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    write(rows, notes, command, args, docs)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "--protocol" in args or any(a.startswith("--protocol=") for a in args):
        return _protocol(args)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="128/8,256/16", help="MQAR settings SEQ_LEN/NUM_KV_PAIRS,…")
    parser.add_argument("--kinds", default=KINDS, help="attention, pulse, hybrid, or registered mixer kinds")
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3,1e-2", help="learning rates of each sweep")
    parser.add_argument("--dims", default=None, help="model widths to sweep too, e.g. 64,128 (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[],
                        help="a recipe override for every sweep, or for one setting as SEQ/PAIRS:KEY=VALUE "
                        "(repeatable); SEQ/PAIRS:train.lr=A,B is that setting's own learning-rate grid")
    add_common_arguments(parser, out="runs/recall", docs="recall.md and recall.png are")
    parser.add_argument("--curriculum", action="store_true",
                        help="start each longer setting from the kind's best weights at the setting before it")

    def write(entries: list[dict[str, Any]], notes: list[str], command: str, args: argparse.Namespace,
              docs: Path) -> None:
        plot(entries, docs / "recall.png")
        atomic_write_text(docs / "recall.md", markdown(entries, notes, command, args.note))
        print(f"wrote {docs / 'recall.md'} and {docs / 'recall.png'} ({len(entries)} rows; {len(notes)} notes)")

    return run_tool(parser, argv, "recall_table", collect, write)


def _protocol(args: list[str]) -> int:
    """--protocol zoology: tools/zoology.py (Zoology's train-on-a-mixture, test-longer protocol); --protocol
    settings: this file's sweeps per setting (the default)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--protocol", choices=["settings", "zoology"], default="settings")
    known, rest = parser.parse_known_args(args)
    if known.protocol == "settings":
        return main(rest)
    spec = importlib.util.spec_from_file_location("tools_zoology", Path(__file__).with_name("zoology.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


if __name__ == "__main__":
    sys.exit(main())
