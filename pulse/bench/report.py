"""Show a benchmark document: rich tables, a JSON file, a log–log plot."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from pulse.bench.schema import SCHEMA
from pulse.errors import PulseError
from pulse.units import fmt_bytes, fmt_count


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 1000 else f"{ms:,.0f}"


def _bytes(n: float) -> str:
    return fmt_bytes(n, ".3g")


def _count(n: float) -> str:
    return fmt_count(n, ".3g")


def machine_line(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["settings"]
    matmul = m.get("matmul")
    ceiling = (
        f"dense matmul {matmul['gflops']:.3g} GFLOP/s ({matmul['size']}² {matmul['dtype']}, median)"
        if matmul else (f"dense matmul {m['reason']}" if str(m.get("reason", "")).startswith("not measured")
                        else f"dense matmul not measured ({m.get('reason', 'unknown')})")
    )
    device = m.get("device_name") if str(m.get("device", "")).startswith("cuda") else m.get("cpu")
    return (f"{device} · threads {threads_used(doc)} of {m.get('logical_cpus')} CPUs{_threads_how(doc)} · "
            f"torch {m.get('torch', '?')} · {s['device']} {s['dtype']} · {ceiling}")


def threads_used(doc: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> str:
    """The torch thread counts the measuring processes ran with: `2`, or `1–2` where they differed."""
    if runs is None:
        runs = [*doc["runs"], doc["machine"]]
    used = sorted({r["threads"] for r in runs if r.get("threads")})
    if not used:
        return str(doc["settings"].get("threads") or "?")
    return str(used[0]) if len(used) == 1 else f"{used[0]}–{used[-1]}"


def _threads_how(doc: dict[str, Any]) -> str:
    """How the threads were chosen, where PULSE chose them (`pulse.threads`); nothing after --threads N."""
    if doc["settings"].get("threads"):
        return ""
    how = next((r["threads_how"] for r in [doc["machine"], *doc["runs"]] if r.get("threads_how")), None)
    return f" ({how})" if how else ""


def labels(doc: dict[str, Any]) -> list[str]:
    """Short names for the systems, in order: A, B, …, Z, S27, …"""
    return [chr(65 + i) if i < 26 else f"S{i + 1}" for i in range(len(doc["systems"]))]


def legend(doc: dict[str, Any]) -> Table:
    """Each system's letter, full name, parameter count, torch threads and the path its ops took."""
    table = Table(title="systems", title_justify="left", show_edge=False)
    for col, just in (("", "left"), ("system", "left"), ("params", "right"), ("threads", "right"), ("path", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for label, system in zip(labels(doc), doc["systems"]):
        params = f"{system['params']:,}" if system.get("params") is not None else "—"
        runs = [r for r in doc["runs"] if r.get("system") == system["name"]]
        table.add_row(label, system["name"], params, threads_used(doc, runs), system.get("path", "eager"))
    return table


def results_table(doc: dict[str, Any], compact: bool = False) -> Table:
    """One section per length, one row per system, ratios to the baseline side by side.

    `compact` names systems by their letter in `legend` and leaves out the min–max and tokens/s
    columns, so the table fits 80 columns whole; `render` chooses it when the full table is wider.
    """
    s = doc["settings"]
    per = "token" if s["mode"] == "generate" else "batch"
    names = labels(doc) if compact else [system["name"] for system in doc["systems"]]
    base = names[0]
    title = (f"pulse bench · {s['mode']} · batch {s['batch']} · {s['repeats']} repeats × {s['rounds']} round(s) · "
             f"speed-up = {base} time / time, pair by pair")
    table = Table(title=title, title_justify="left", caption=machine_line(doc), caption_justify="left")
    columns = [("T", "right"), ("system", "left"), (f"ms/{per}", "right"), ("min–max", "right"),
               ("tokens/s", "right"), ("memory", "right"), ("% matmul", "right"), ("speed-up", "right"),
               ("memory ×", "right")]
    if compact:
        columns = [c for c in columns if c[0] not in ("min–max", "tokens/s")]
    for col, just in columns:
        table.add_column(col, justify=just, no_wrap=col == "system")
    for i, seq_len in enumerate(s["seq_lens"]):
        if i:
            table.add_section()
        for name, system in zip(names, doc["systems"]):
            r = next(r for r in system["results"] if r["seq_len"] == seq_len)
            if r["status"] != "ok":
                # the reason is listed under the table (`skip_notes`), so a long one cannot stretch the row
                table.add_row(str(seq_len), name, f"[yellow]{r['status']}[/]")
                continue
            t, ratio = r["time_s"], r.get("ratio") or {}
            speed = ratio.get("speedup")
            mem = ratio.get("memory")
            cells = [
                str(seq_len),
                name,
                _ms(t["median"]),
                f"{_ms(t['min'])}–{_ms(t['max'])}",
                _count(r["tokens_per_s"]),
                _bytes(r["memory_bytes"]),
                f"{100 * r['matmul_fraction']:.1f}" if r.get("matmul_fraction") is not None else "—",
                f"{speed['median']:.2f}×" if speed else "—",
                f"{mem['median']:.2f}×" if mem else "—",
            ]
            table.add_row(*(cells[:3] + cells[5:] if compact else cells))
    return table


def scaling_table(doc: dict[str, Any], compact: bool = False) -> Table:
    """Params and fitted exponents per system; `compact`: letters, no params or fitted-T columns."""
    names = labels(doc) if compact else [system["name"] for system in doc["systems"]]
    table = Table(title="scaling: time ≈ c·Tᵏ (least squares on log–log medians)", title_justify="left")
    columns = [("system", "left"), ("params", "right"), ("k (time)", "right"), ("r²", "right"),
               ("fitted T", "left"), ("k per step", "left"), ("k (memory)", "right")]
    if compact:
        columns = [c for c in columns if c[0] not in ("params", "fitted T")]
    for col, just in columns:
        table.add_column(col, justify=just, no_wrap=col == "system")
    for name, system in zip(names, doc["systems"]):
        fit, mem = system["scaling"], system["memory_scaling"]
        cells = [
            name,
            f"{system['params']:,}" if system["params"] is not None else "—",
            f"{fit['exponent']:.2f}" if fit else "—",
            f"{fit['r2']:.3f}" if fit and len(fit["seq_lens"]) > 2 else "—",  # two points: a line fits exactly
            f"{fit['seq_lens'][0]}…{fit['seq_lens'][-1]}" if fit else "fewer than 2 lengths measured",
            " ".join(f"{k:.2f}" for k in system["local_exponents"]) or "—",
            f"{mem['exponent']:.2f}" if mem else "—",
        ]
        table.add_row(*([cells[0]] + cells[2:4] + cells[5:] if compact else cells))
    return table


def skip_notes(doc: dict[str, Any]) -> list[str]:
    """`system at T=…: reason` for every length that was skipped or failed, in table order."""
    notes = []
    for seq_len in doc["settings"]["seq_lens"]:
        for system in doc["systems"]:
            r = next(r for r in system["results"] if r["seq_len"] == seq_len)
            if r["status"] != "ok":
                notes.append(f"{system['name']} at T={seq_len}: {r['status']} — {r['reason']}")
    return notes


def full_width(doc: dict[str, Any]) -> int:
    """Columns the full (uncompacted) tables need to show every cell on one line."""
    from rich.console import Console

    probe = Console(width=1000, file=io.StringIO())
    return max(probe.measure(t).maximum for t in (results_table(doc), scaling_table(doc), legend(doc)))


def render(doc: dict[str, Any], console: Any) -> None:
    """Print the whole report to a rich console: results, scaling, the legend and the warnings.

    Where the console is narrower than the full tables, they name systems by letter (the legend
    says which is which) and drop their widest columns, so no name is cut at 80 columns.
    """
    compact = console.width < full_width(doc)
    console.print(results_table(doc, compact))
    for note in skip_notes(doc):
        console.print(f"[dim]{note}[/]", highlight=False)
    console.print(scaling_table(doc, compact))
    console.print(legend(doc))
    for warning in doc.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def render_text(doc: dict[str, Any], width: int | None = None) -> str:
    """The report as plain text, `width` columns wide — by default as wide as its widest table, so nothing is cut."""
    from rich.console import Console

    console = Console(width=width or full_width(doc), file=io.StringIO(), record=True, color_system=None,
                      force_terminal=False)
    render(doc, console)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def write_text(doc: dict[str, Any], path: str | Path, width: int | None = None) -> None:
    from pulse.paths import atomic_write_text

    atomic_write_text(path, render_text(doc, width))


def write_json(doc: dict[str, Any], path: str | Path) -> None:
    from pulse.paths import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def save_results(doc: dict[str, Any], path: str | Path, write) -> Path:
    """`write(doc, path)`; when that fails after a long measurement, the results go to a fallback
    file in the temp directory instead, and a PulseError names both paths. Returns the path written."""
    import tempfile

    try:
        write(doc, path)
        return Path(path)
    except (OSError, PulseError) as err:
        fd, fallback = tempfile.mkstemp(prefix="pulse-bench-", suffix=".json")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
        raise PulseError(
            f"could not write {path} ({err}); the results are saved in {fallback} — "
            f"render them with `python -m pulse.bench.report {fallback} OUT.txt` once the path is fixed."
        ) from None


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PulseError(f"{path}: cannot read a bench JSON document ({err}).") from None
    if doc.get("schema") != SCHEMA:
        raise PulseError(f"{path}: not a `pulse bench --json` document (schema {doc.get('schema')!r}).")
    return doc


def plot(doc: dict[str, Any], path: str | Path) -> None:
    """Log–log PNG: time and memory against sequence length, one line per system; skipped lengths are left out."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    s = doc["settings"]
    per = "token" if s["mode"] == "generate" else "batch"
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_time, ax_mem = fig.subplots(1, 2)
    for system in doc["systems"]:
        ok = [r for r in system["results"] if r["status"] == "ok"]
        if not ok:
            continue
        lens = [r["seq_len"] for r in ok]
        fit = system["scaling"]
        label = system["name"] + (f" (k={fit['exponent']:.2f})" if fit else "")
        line = ax_time.plot(lens, [r["time_s"]["median"] * 1e3 for r in ok], marker="o", label=label)[0]
        ax_time.vlines(lens, [r["time_s"]["min"] * 1e3 for r in ok], [r["time_s"]["max"] * 1e3 for r in ok],
                       color=line.get_color(), alpha=0.5)
        mem = [(n, r["memory_bytes"] / 2**20) for n, r in zip(lens, ok) if r["memory_bytes"] > 0]
        if mem:
            ax_mem.plot(*zip(*mem), marker="o", label=system["name"], color=line.get_color())
    kind = next((r["memory_kind"] for sys_ in doc["systems"] for r in sys_["results"] if r["status"] == "ok"), "memory")
    for ax, ylabel in ((ax_time, f"ms per {per} (median, bar = min–max)"), (ax_mem, f"MiB ({kind})")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle(f"pulse bench · {s['mode']} · batch {s['batch']}\n{machine_line(doc)}", fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    # python -m pulse.bench.report RUN.json [OUT.txt]: re-render a saved run, whole, as text
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m pulse.bench.report RUN.json [OUT.txt]")
    document = read_json(sys.argv[1])
    if len(sys.argv) == 3:
        write_text(document, sys.argv[2])
    else:
        sys.stdout.write(render_text(document))
