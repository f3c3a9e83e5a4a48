"""The fault suite: hostile recipes, damaged checkpoints, kills, NaN and a full disk.

Every input must end in a clean PulseError (exit 2 from the CLI) or a correct result;
never a traceback, a hang, a silently wrong result, or a lost good checkpoint. Each
test prints its counts (run with -s to see them):

    inputs tried · clean (PulseError) · correct · tracebacks · hangs · silently wrong · data lost

Bounded for CI: seeded, ≥ 40 recipe mutations per recipe and card, one small model. In-process
training here skips the plots (`no_plots`: drawing them was 90% of a short run's time; tests/test_train.py
checks them), and the training runs are shared where a test only needs an uninterrupted one to compare with.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import pulse
from helpers import run_cli
from pulse.errors import PulseError
from pulse.specs.load import card_names, card_path, read_table, resolve
from pulse.storage.checkpoint import WEIGHTS, load_weights
from pulse.storage.rundir import RunDir
from pulse.storage.runfiles import STATE
from pulse.train import train
from pulse.train.faults import VARIABLE as INJECT
from test_rundir import Messages
from test_train import PULSE, recipe_dict, weights, write_recipe

ROOT = Path(__file__).resolve().parent.parent
MUTATIONS = 40
HANG_S = 60.0  # a hang, not a slow machine: building a recipe on the meta device takes well under 10 s
HOSTILE = [True, False, "4", "yes", "", -1, 0, 2**63 - 1, -(2**63), 1e21, -1e-300, float("inf"), float("nan"),
           "x" * 5000, [], [1] * 5000, {}, {"kind": "x" * 200}, "../../etc/passwd", "/etc/passwd", 3.5, "☃"]


def report(name: str, counts: Counter) -> None:
    keys = ["inputs", "clean", "correct", "tracebacks", "hangs", "silently wrong", "data lost"]
    print(f"\n[faults] {name}: " + " · ".join(f"{k} {counts.get(k, 0)}" for k in keys))


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*prefix, key))
    if prefix:
        yield prefix, node


def _set(data: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _mutate(data: dict, rng: random.Random) -> tuple[dict, str, tuple, object]:
    """One seeded mutation: a hostile value at a leaf, a typo'd / unknown / deleted key, or a deep table."""
    out = copy.deepcopy(data)
    leaves = [p for p, _ in _leaves(out)]
    path = rng.choice(leaves)
    how = rng.choice(["value", "value", "value", "typo", "unknown", "delete", "deep", "from"])
    original = None
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if how == "value":
        original = parent[path[-1]]
        value = rng.choice(HOSTILE)
        parent[path[-1]] = copy.deepcopy(value)
        return out, how, path, (original, value)
    if how == "typo" and len(str(path[-1])) > 1:
        key = str(path[-1])
        i = rng.randrange(len(key))
        parent[key[:i] + key[i + 1:]] = parent.pop(path[-1])
    elif how == "unknown":
        parent["num_sates" if rng.random() < 0.5 else "x" * 300] = 1
    elif how == "delete":
        parent.pop(path[-1])
    elif how == "deep":
        deep: dict = {}
        node = deep
        for _ in range(rng.choice([20, 200, 3000])):
            node["a"] = {}
            node = node["a"]
        parent[path[-1]] = deep
    elif how == "from":
        out.setdefault("model", {})["from"] = rng.choice(["../recipes/hybrid", "/etc/passwd", "y" * 400, "nope"])
    return out, how, path, None


def _silently_wrong(recipe, path: tuple, change) -> bool:
    """An accepted mutation that changed a value's type: a boolean or text taken as a number, inf taken."""
    if change is None:
        return False
    original, value = change
    numeric = isinstance(original, (int, float)) and not isinstance(original, bool)
    if numeric and isinstance(value, (bool, str)):
        return True
    if isinstance(original, bool) and not isinstance(value, bool):
        return True
    return isinstance(value, float) and not math.isfinite(value)


def _sources() -> list[tuple[str, dict]]:
    recipes = [(p.name, read_table(p)) for p in sorted((ROOT / "recipes").glob("*.toml"))]
    cards = [(f"card:{n}", read_table(card_path(n))) for n in card_names()]
    return recipes + cards


def test_recipe_fuzzer_over_every_recipe_and_card():
    counts: Counter = Counter()
    failures = []
    for name, data in _sources():
        rng = random.Random(f"pulse-faults-{name}")
        for i in range(MUTATIONS):
            mutated, how, path, change = _mutate(data, rng)
            counts["inputs"] += 1
            start = time.perf_counter()
            try:
                recipe = pulse.recipe_from_dict(mutated, source=f"{name}#{i}")
                pulse.build_model(recipe, device="meta")
            except PulseError as err:
                counts["clean"] += 1
                if len(str(err)) > 5000:
                    failures.append(f"{name}#{i} {how} {path}: message of {len(str(err))} characters")
            except Exception as err:  # noqa: BLE001 (counting escapes is the point)
                counts["tracebacks"] += 1
                failures.append(f"{name}#{i} {how} {path}: {type(err).__name__}: {str(err)[:200]}")
            else:
                if _silently_wrong(recipe, path, change):
                    counts["silently wrong"] += 1
                    failures.append(f"{name}#{i} {how} {path}: accepted {change}")
                else:
                    counts["correct"] += 1
            if time.perf_counter() - start > HANG_S:
                counts["hangs"] += 1
                failures.append(f"{name}#{i} {how} {path}: took {time.perf_counter() - start:.1f} s")
    report("recipe fuzzer", counts)
    assert counts["inputs"] >= 40 * len(_sources())
    assert not failures, "\n".join(failures[:20])


def test_override_fuzzer_through_set():
    counts: Counter = Counter()
    failures = []
    rng = random.Random("pulse-faults-set")
    base = read_table(ROOT / "recipes/hybrid.toml")
    leaves = [".".join(map(str, p)) for p, v in _leaves(resolve(base)) if not isinstance(v, dict)]
    texts = ["true", '"4"', "inf", "nan", "1e21", "9223372036854775807", "-1", "[" * 300 + "]" * 300,
             '"' + "k" * 10_000 + '"', "{a={b={c=1}}}", "yes"]
    for i in range(120):
        path = rng.choice(leaves + [".".join(["a"] * rng.choice([2, 40, 1000])), "model.from"])
        override = f"{path}={rng.choice(texts)}"
        counts["inputs"] += 1
        try:
            pulse.recipe_from_dict(base, [override])
        except PulseError:
            counts["clean"] += 1
        except Exception as err:  # noqa: BLE001
            counts["tracebacks"] += 1
            failures.append(f"--set {override[:80]}: {type(err).__name__}: {str(err)[:200]}")
        else:
            counts["correct"] += 1
    report("--set fuzzer", counts)
    assert not failures, "\n".join(failures[:20])


def _skip_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulse.train.loop as loop

    monkeypatch.setattr(loop, "plot_run", lambda *args, **kwargs: [])


@pytest.fixture
def no_plots(monkeypatch):
    _skip_plots(monkeypatch)


TRAINED = recipe_dict(steps=8, checkpoint_every=4, eval_every=0, keep_last=2)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """An uninterrupted run of TRAINED (checkpoints at steps 4 and 8), shared by the tests that damage or stop it."""
    root = tmp_path_factory.mktemp("faults") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _skip_plots(monkeypatch)
        train(pulse.recipe_from_dict(TRAINED), root)
    return root


def _damaged_weights(original: bytes, other: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    (length,) = struct.unpack("<Q", original[:8])
    header_end = 8 + length
    cases = [("empty file", b""), ("8 bytes", original[:8])]
    for cut in sorted(rng.sample(range(1, len(original)), 12)):
        cases.append((f"truncated at {cut}", original[:cut]))
    for n in range(12):
        pos = rng.randrange(8, header_end)
        flipped = bytearray(original)
        flipped[pos] ^= 1 << rng.randrange(8)
        cases.append((f"header bit flip at {pos}", bytes(flipped)))
    for n in range(12):
        pos = rng.randrange(header_end, len(original))
        flipped = bytearray(original)
        flipped[pos] ^= 1 << rng.randrange(8)
        cases.append((f"data bit flip at {pos}", bytes(flipped)))
    if b'"format":"pt"' in original[:header_end]:  # metadata no check reads: must load exactly
        harmless = original.index(b'"format":"pt"') + len(b'"format":"')
        flipped = bytearray(original)
        flipped[harmless] ^= 1
        cases.append((f"header bit flip at {harmless} (format value)", bytes(flipped)))
    for delta in (-7, -1, 1, 64, 2**40):
        cases.append((f"header length {delta:+d}", struct.pack("<Q", max(length + delta, 0)) + original[8:]))
    cases.append(("invalid JSON header", original[:8] + b"{" + b"\x00" * (length - 1) + original[header_end:]))
    cases.append(("another model's checkpoint", other))
    if other:
        cases.append(("recipe swapped, hash updated", _swap_recipe(original, other)))
    import io
    import pickle

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buffer)
    cases.append(("torch pickle renamed", buffer.getvalue()))
    cases.append(("plain pickle renamed", pickle.dumps({"a": 1})))
    return cases


def _swap_recipe(original: bytes, other: bytes) -> bytes:
    """These tensors, under another model's recipe with a hash that matches that recipe."""
    from safetensors.torch import load, save

    def meta(data: bytes) -> dict:
        (length,) = struct.unpack("<Q", data[:8])
        return json.loads(data[8 : 8 + length])["__metadata__"]

    mine, theirs = meta(original), meta(other)
    swapped = {**mine, "pulse_recipe": theirs["pulse_recipe"], "pulse_recipe_hash": theirs["pulse_recipe_hash"]}
    return save(load(original), metadata=swapped)


def test_checkpoint_corrupter_weights(trained_run, tmp_path):
    counts: Counter = Counter()
    failures = []
    good = pulse.load_checkpoint(trained_run)[0].state_dict()  # tied weights included, as a load gives them
    other_dir = tmp_path / "other"
    other = pulse.recipe_from_dict({**recipe_dict(), "model": {**recipe_dict()["model"], "dim": 32}})
    pulse.save_checkpoint(pulse.build_model(other), other, other_dir)
    rng = random.Random("pulse-faults-weights")
    original = (trained_run / WEIGHTS).read_bytes()
    for label, data in _damaged_weights(original, (other_dir / WEIGHTS).read_bytes(), rng):
        case = tmp_path / "case"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(trained_run, case, ignore=shutil.ignore_patterns("checkpoints"))
        (case / WEIGHTS).write_bytes(data)
        counts["inputs"] += 1
        try:
            model, _ = pulse.load_checkpoint(case)
        except PulseError:
            counts["clean"] += 1
            continue
        except Exception as err:  # noqa: BLE001
            counts["tracebacks"] += 1
            failures.append(f"{label}: {type(err).__name__}: {str(err)[:200]}")
            continue
        loaded = model.state_dict()
        if label == "another model's checkpoint":
            counts["correct"] += 1  # a whole, consistent checkpoint of another model loads as that model
        elif loaded.keys() == good.keys() and all(torch.equal(loaded[k], good[k]) for k in good):
            counts["correct"] += 1  # e.g. a flip inside the version string: the weights are still exact
        else:
            counts["silently wrong"] += 1
            failures.append(f"{label}: loaded different weights")
    report("checkpoint corrupter (weights)", counts)
    assert counts["inputs"] >= 45
    assert not failures, "\n".join(failures)


def test_checkpoint_corrupter_training_state_falls_back_and_keeps_the_older_checkpoint(trained_run, tmp_path,
                                                                                         no_plots):
    counts: Counter = Counter()
    failures = []
    rng = random.Random("pulse-faults-state")
    steps = RunDir(trained_run).complete()
    assert [s for s, _ in steps] == [4, 8]
    state = (steps[-1][1] / STATE).read_bytes()
    # one step past the older checkpoint: enough to show which one the run continued from
    longer = pulse.recipe_from_dict(recipe_dict(steps=5, checkpoint_every=4, eval_every=0, keep_last=2))
    every = _damaged_weights(state, b"", rng)
    random_kinds = ("truncated at", "header bit", "data bit")
    cases = [c for i, c in enumerate(every) if not c[0].startswith(random_kinds) or i % 3 == 0]
    cases.append(("weights swapped", None))
    for label, data in cases:
        case = tmp_path / "case"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(trained_run, case)
        newest = case / "checkpoints/step-00000008"
        if data is None:
            shutil.copy(case / "checkpoints/step-00000004" / WEIGHTS, newest / WEIGHTS)
        else:
            (newest / STATE).write_bytes(data)
        older = {p.name: p.read_bytes() for p in (case / "checkpoints/step-00000004").iterdir()}
        counts["inputs"] += 1
        said = Messages()
        try:
            result = train(longer, case, resume=True, reporter=said)
        except PulseError:
            counts["clean"] += 1
        except Exception as err:  # noqa: BLE001
            counts["tracebacks"] += 1
            failures.append(f"{label}: {type(err).__name__}: {str(err)[:200]}")
        else:
            if result.resumed_from == 4 and any("skipping damaged checkpoint" in m for m in said.said):
                counts["correct"] += 1
            else:
                counts["silently wrong"] += 1
                failures.append(f"{label}: resumed from {result.resumed_from}")
        # the older checkpoint is removed only by keep_last after newer ones are whole; if kept, it is unchanged
        kept = case / "checkpoints/step-00000004"
        if kept.exists() and {p.name: p.read_bytes() for p in kept.iterdir()} != older:
            counts["data lost"] += 1
            failures.append(f"{label}: the older checkpoint changed")
    report("checkpoint corrupter (training state)", counts)
    assert not failures, "\n".join(failures)


@pytest.mark.audit("training stops", "correct")
def test_kills_and_stop_signals_at_random_moments_then_resume_is_bit_identical(tmp_path, no_plots):
    """SIGKILL at any moment loses only what followed the newest checkpoint; SIGTERM and Ctrl-C (SIGINT) lose
    nothing: the run finishes its step, saves it and says how to continue (exit 128 + the signal)."""
    counts: Counter = Counter()
    data = recipe_dict(steps=60, checkpoint_every=7, eval_every=30, log_every=3)
    path = write_recipe(tmp_path / "r.toml", data)
    reference = train(pulse.recipe_from_dict(data), tmp_path / "ref")
    run = RunDir(tmp_path / "run")
    rng = random.Random("pulse-faults-kill")
    failures = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        before = run.complete()[-1][0] if run.complete() else 0
        proc = subprocess.Popen([str(PULSE), "train", str(path), "--out", str(run.root), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        # a graceful stop is sent mid-run (the first new checkpoint has landed, 2 steps of 60 later at most);
        # a kill may land anywhere, a checkpoint being written included
        landed = lambda: run.complete() and run.complete()[-1][0] > before  # noqa: E731
        while not landed() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 1.5) if sig == signal.SIGKILL else 0.0)
        proc.send_signal(sig)
        _, stderr = proc.communicate()
        counts["inputs"] += 1
        newest = run.complete()
        if newest:
            # the newest whole checkpoint must read back, whatever moment the kill hit
            load_weights(pulse.build_model(pulse.recipe_from_dict(data)), newest[-1][1])
        if sig != signal.SIGKILL:
            said = " ".join(stderr.split())
            step = int(said.split("stopped after step ")[1].split()[0]) if "stopped after step " in said else None
            if proc.returncode != 128 + sig or step is None or "Traceback" in said:
                counts["tracebacks" if "Traceback" in said else "silently wrong"] += 1
                failures.append(f"{signal.Signals(sig).name}: exit {proc.returncode}: {said[-400:]}")
            elif newest[-1][0] != step or "Run the same command again" not in said:
                counts["data lost"] += 1
                failures.append(f"{signal.Signals(sig).name}: stopped at {step}, newest checkpoint {newest[-1][0]}")
            assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".")]
    resumed = train(pulse.recipe_from_dict(data), run.root)
    a, b = weights(tmp_path / "ref"), weights(run.root)
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and resumed.eval == reference.eval
    if not same:
        counts["silently wrong"] += 1
        failures.append("the resumed run differs from the uninterrupted one")
    counts["correct"] = counts["inputs"] - sum(counts[k] for k in ("tracebacks", "silently wrong", "data lost"))
    report("SIGKILL / SIGTERM / SIGINT + resume", counts)
    assert not failures and not (run.root / ".pulse-lock").exists(), "\n".join(failures)


@pytest.mark.audit("training stops", "correct")
def test_a_second_signal_stops_at_once_and_the_previous_checkpoint_stays_the_newest(trained_run, tmp_path,
                                                                                    monkeypatch, no_plots):
    """The second signal arrives while the stop's checkpoint is being written: that checkpoint is removed whole, the
    previous one stays the newest, and the run resumes from it exactly (to the uninterrupted `trained_run`)."""
    import pulse.storage.rundir as rundir
    import pulse.train.stop as stop

    monkeypatch.setattr(stop, "REPEAT_S", 0.0)  # no repeat window: the second signal counts at once
    write = rundir.save_checkpoint

    def second_signal_midway(model, recipe, out, **kwargs):
        write(model, recipe, out, **kwargs)
        if "step-00000006" in str(out):
            os.kill(os.getpid(), signal.SIGTERM)

    class SignalAt(Messages):
        def step(self, step, values):
            if step == 6:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(rundir, "save_checkpoint", second_signal_midway)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="second SIGTERM: stopped at once") as stopped:
        train(pulse.recipe_from_dict(TRAINED), tmp_path / "run", reporter=SignalAt())
    assert not hasattr(stopped.value, "exit_code")  # not the stop that saved
    assert signal.getsignal(signal.SIGTERM) is previous  # the handlers are put back
    run = RunDir(tmp_path / "run")
    assert [s for s, _ in run.complete()] == [4] and not list(run.checkpoints.glob(".*"))
    assert not (run.root / ".pulse-lock").exists()
    monkeypatch.setattr(rundir, "save_checkpoint", write)
    resumed = train(pulse.recipe_from_dict(TRAINED), run.root)
    a, b = weights(trained_run), weights(run.root)
    assert resumed.resumed_from == 4 and all(torch.equal(a[k], b[k]) for k in a)
    report("second signal while saving", Counter(inputs=1, correct=1))


def test_a_repeat_within_the_window_is_the_same_request():
    """torchrun forwards the Ctrl-C the terminal already sent each worker: a repeat at once is not a second signal."""
    from pulse.train.stop import StopRequest

    request = StopRequest(announce=False)
    request(signal.SIGINT)
    request(signal.SIGINT)  # the forwarded copy: no KeyboardInterrupt
    assert request.requested and request.signum == signal.SIGINT


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = write_recipe(tmp_path / "r.toml", recipe_dict(checkpoint_every=1, eval_every=0))
    monkeypatch.setenv(INJECT, "3")  # a NaN at step 3 on every machine (a huge lr diverges on some CPUs only)
    result = run_cli("train", path, "--out", tmp_path / "run", "-q")  # the CLI in this process: exit code, stderr
    assert result.exit_code == 2 and "became" in result.stderr and "Traceback" not in result.output
    complete = RunDir(tmp_path / "run").complete()
    assert complete and all(torch.isfinite(t).all() for t in weights(complete[-1][1]).values())
    report("NaN loss", Counter(inputs=1, clean=1))


FULL_DISK_SCRIPT = """
set -u
mount -t tmpfs -o size=100k tmpfs "$DIR" || exit 77
"$PULSE" train "$RECIPE" --out "$DIR/run" -q 2> "$LOG"
echo "rc=$?"
find "$DIR" -name '.*' -not -name .pulse-lock
cp -a "$DIR/run" "$COPY"
"""


def test_a_full_disk_is_a_clean_error_that_leaves_no_partial_files(tmp_path):
    if shutil.which("unshare") is None or sys.platform != "linux":
        pytest.skip("needs Linux and unshare to mount a small tmpfs")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"mount namespaces are not permitted here: {probe.stderr.decode().strip()[:200]}")
    (tmp_path / "disk").mkdir()
    path = write_recipe(tmp_path / "r.toml", recipe_dict(steps=40, checkpoint_every=1, keep_last=4, eval_every=0))
    env = {**os.environ, "DIR": str(tmp_path / "disk"), "PULSE": str(PULSE), "RECIPE": str(path),
           "LOG": str(tmp_path / "log"), "COPY": str(tmp_path / "copy")}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    if done.returncode == 77:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()[:200]}")
    lines = done.stdout.split()
    log = (tmp_path / "log").read_text()
    assert "rc=2" in lines, done.stdout + log
    assert "no space left on the device" in log and "Traceback" not in log, log
    assert not [x for x in lines if "/." in x], f"partial files left: {done.stdout}"
    point, reasons = RunDir(tmp_path / "copy", writer=False)._newest_readable(lambda text: None)
    assert point is not None and not reasons, reasons  # the newest whole checkpoint reads back (a copy of the tmpfs)
    report("full disk (tmpfs 100 KiB)", Counter(inputs=1, clean=1))


def test_a_full_disk_in_viz_export_and_build_force_is_one_clear_error(tmp_path, monkeypatch):
    """Every command that writes goes through the one atomic writer: a full disk is exit 2, no traceback, no partial
    file, and build --out --force puts the directory it moved aside back."""
    import errno

    import pulse.paths as paths

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    recipe = ROOT / "recipes/hybrid.toml"
    small = [a for s in ("model.dim=32", "model.depth=3", "model.mixers.pulse.chunk_size=8") for a in ("--set", s)]
    (tmp_path / "old").mkdir()
    assert run_cli("build", recipe, *small, "--out", tmp_path / "old").exit_code == 0
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    monkeypatch.setattr(paths.os, "fsync", full)  # every atomic write fails at its flush, as on a full disk
    commands = [("viz", recipe, *small, "--prompt", "hello", "--out", tmp_path / "viz", "--only", "attention"),
                ("build", recipe, *small, "--out", tmp_path / "old", "--force")]
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        # the write is what fails here, so one attention layer will do (tests/test_export.py exports PULSE layers)
        one = [a for s in ("model.dim=32", "model.depth=1", 'model.layout=["attn"]') for a in ("--set", s)]
        commands.append(("export", recipe, *one, "--out", tmp_path / "m.onnx"))
    for args in commands:
        result = run_cli(*args)
        assert result.exit_code == 2 and "no space left on the device" in result.stderr, (args, result.output)
        assert "Traceback" not in result.output and "--resume" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before  # put back, not left empty
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not (tmp_path / "m.onnx").exists()
