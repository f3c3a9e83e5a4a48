"""Bring your own corpus: readers, the split by document, the token cache, packing, bits per byte, tokenizers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pulse
from helpers import run_cli
from pulse.data.bpe import train_bpe, write_tokenizer
from pulse.data.corpus import open_corpus
from pulse.data.readers import corpus_files, documents
from pulse.data.tokenizer import ByteTokenizer, HFTokenizer, tokenizer_of
from pulse.errors import PulseError, PulseWarning
from pulse.specs.tasks import TextSpec
from pulse.tasks.text import Text
from test_train import write_recipe

PULSE = Path(sys.executable).parent / "pulse"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def doc(i: int) -> str:
    """A distinct document: its number, then words chosen by it (some non-ASCII, so bytes ≠ characters)."""
    body = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(20 + i % 13))
    return f"document {i}: {body} — ünïcödé {i}\n"


def text_corpus(root: Path, n: int = 40) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    docs = [doc(i) for i in range(n)]
    for i, d in enumerate(docs):
        (root / f"d{i:03d}.txt").write_text(d, encoding="utf-8")
    return docs


def jsonl_corpus(path: Path, n: int = 40) -> list[str]:
    docs = [doc(i) for i in range(n)]
    path.write_text("".join(json.dumps({"id": i, "text": d}) + ("\n\n" if i == 3 else "\n")
                            for i, d in enumerate(docs)), encoding="utf-8")
    return docs


def spec(path: Path, tmp_path: Path, **settings) -> TextSpec:
    return TextSpec(path=str(path), seq_len=16, cache_dir=str(tmp_path / "cache"), **settings)


def text_recipe(tmp_path: Path, *, vocab: int = 259, steps: int | None = None, **task) -> dict:
    """A one-layer attention LM of width 16 on the corpus tmp_path/c (its cache in tmp_path/cache); `task` sets
    more [task] keys, `steps` adds a tiny [train] table."""
    data = {"model": {"kind": "lm", "vocab_size": vocab, "dim": 16, "depth": 1, "layout": ["attn"],
                      "mixers": {"attn": {"kind": "attention", "num_heads": 2}}},
            "task": {"kind": "text", "path": str(tmp_path / "c"), "seq_len": 16,
                     "cache_dir": str(tmp_path / "cache"), **task}}
    if steps is not None:
        data["train"] = {"steps": steps, "batch_size": 2, "eval_every": 0, "threads": 1, "device": "cpu"}
    return data


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bpe")
    text_corpus(root / "corpus", 60)
    out = root / "tok.json"
    write_tokenizer(train_bpe([str(root / "corpus")], vocab_size=300, min_frequency=1), out)
    return out


def test_each_reader_gives_the_documents_in_order(tmp_path):
    docs = text_corpus(tmp_path / "txt", 5)
    files = corpus_files(spec(tmp_path / "txt", tmp_path))
    assert [f.format for f in files] == ["text"] * 5
    assert [next(documents(f, spec(tmp_path, tmp_path))).decode() for f in files] == docs
    rows = jsonl_corpus(tmp_path / "c.jsonl", 6)
    jsonl = spec(tmp_path / "c.jsonl", tmp_path)
    (file,) = corpus_files(jsonl)
    assert file.format == "jsonl" and list(documents(file, jsonl)) == rows  # the blank line is no document
    pa = pytest.importorskip("pyarrow", reason="the data extra (pip install 'pulse[data]') reads Parquet")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": rows, "n": list(range(6))}), tmp_path / "c.parquet", row_group_size=4)
    parquet = spec(tmp_path / "c.parquet", tmp_path, text_field="body")
    (file,) = corpus_files(parquet)
    assert file.format == "parquet" and list(documents(file, parquet)) == rows
    datasets = pytest.importorskip("datasets", reason="the data extra reads datasets saved by `datasets`")
    datasets.Dataset.from_dict({"text": rows}).save_to_disk(str(tmp_path / "saved"))
    saved = spec(tmp_path / "saved", tmp_path)
    (file,) = corpus_files(saved)
    assert file.format == "dataset" and list(documents(file, saved)) == rows


@pytest.mark.parametrize("line, message", [
    ("{not json", r"c.jsonl:2: not a JSON line"),
    ('{"body": "x"}', r"c.jsonl:2: no field `text`.*task.text_field"),
    ('{"text": 5}', r"c.jsonl:2: the text field holds int"),
])
def test_a_bad_json_line_is_located(tmp_path, line, message):
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n' + line + "\n")
    s = spec(tmp_path / "c.jsonl", tmp_path)
    with pytest.raises(PulseError, match=message):
        list(documents(corpus_files(s)[0], s))


def _stream_docs(stream: np.ndarray, eos: int) -> list[list[int]]:
    ends = np.flatnonzero(stream == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [stream[a:b].tolist() for a, b in zip(starts, ends)]


def test_the_split_is_by_document_seeded_and_exactly_the_fraction(tmp_path):
    docs = text_corpus(tmp_path / "c", 42)
    tok = ByteTokenizer(specials=True)
    shares = []
    for seed in (0, 1, 2):
        corpus = open_corpus(spec(tmp_path / "c", tmp_path, val_fraction=0.1, seed=seed), tok)
        train = [bytes(d).decode() for d in _stream_docs(np.asarray(corpus.train), tok.eos_id)]
        val = [bytes(d).decode() for d in _stream_docs(np.asarray(corpus.val), tok.eos_id)]
        assert len(val) == round(0.1 * 42) and sorted(train + val) == sorted(docs) and not set(train) & set(val)
        shares.append(frozenset(val))
    assert len(set(shares)) > 1  # the seed chooses which documents
    again = open_corpus(spec(tmp_path / "c", tmp_path, val_fraction=0.1, seed=0), tok)
    assert again.reused and frozenset(bytes(d).decode() for d in _stream_docs(np.asarray(again.val), tok.eos_id)) \
        == shares[0]


def test_packing_is_exact_the_windows_decode_back_to_the_documents_joined_by_eos(tmp_path, bpe):
    docs = text_corpus(tmp_path / "c", 30)
    task = Text(spec(tmp_path / "c", tmp_path, tokenizer=str(bpe), val_fraction=0.2), tokenizer=HFTokenizer.load(bpe))
    corpus = task.prepare()
    tok = task.tokenizer
    train_docs = [tok.decode(d) for d in _stream_docs(np.asarray(corpus.train), tok.eos_id)]
    assert set(train_docs) <= set(docs) and len(train_docs) == 24
    expected = np.concatenate([np.asarray(tok.encode(d) + [tok.eos_id]) for d in train_docs])
    assert np.array_equal(np.asarray(corpus.train), expected)  # no padding, nothing lost or reordered
    t = task.spec.seq_len
    batch = task.batch("train", np.arange(task.size("train")))
    assert torch.equal(batch["ids"][:, 1:], batch["labels"][:, :-1])
    assert torch.equal(batch["ids"].flatten(), torch.from_numpy(expected[: task.size("train") * t].astype(np.int64)))


def test_the_cache_is_reused_rebuilt_on_change_and_after_damage(tmp_path):
    text_corpus(tmp_path / "c", 20)
    s = spec(tmp_path / "c", tmp_path)
    tok = ByteTokenizer(specials=True)
    first = open_corpus(s, tok)
    assert not first.reused and open_corpus(s, tok).reused
    (tmp_path / "c/d000.txt").write_text("changed " * 20)
    changed = open_corpus(s, tok)
    assert not changed.reused and changed.root != first.root and not first.root.exists()  # the stale entry is gone
    other_tok = open_corpus(s, ByteTokenizer(specials=False))
    assert not other_tok.reused and other_tok.root != changed.root and changed.root.exists()
    train = changed.root / "train.bin"
    data = train.read_bytes()
    train.write_bytes(data[:-6])
    said = []
    rebuilt = open_corpus(s, tok, say=said.append)
    assert not rebuilt.reused and "truncated" in said[0] and train.read_bytes() == data
    train.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    open_corpus(s, tok, say=said.append)
    assert "corrupt" in said[1] and train.read_bytes() == data
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_two_preparers_at_once_leave_one_whole_cache(tmp_path):
    text_corpus(tmp_path / "c", 400)
    data = text_recipe(tmp_path)
    recipe = write_recipe(tmp_path / "r.toml", data)
    procs = [subprocess.Popen([str(PULSE), "data", "prepare", str(recipe)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    entries = [p for p in (tmp_path / "cache").iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    shown = run_cli("data", "inspect", recipe, "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["cache_state"] == "fresh"


def test_bits_per_byte_equals_nats_over_ln2_for_bytes_and_counts_bytes_for_bpe(tmp_path, bpe):
    text_corpus(tmp_path / "c", 30)
    model = pulse.build_model(pulse.recipe_from_dict({"model": {"vocab_size": 300, "dim": 16, "depth": 1,
                                                                "layout": ["attn"], "mixers": {"attn": {
                                                                    "kind": "attention", "num_heads": 2}}}}))
    plain = Text(spec(tmp_path / "c", tmp_path), tokenizer=ByteTokenizer.for_vocab(256))  # no eos: a target, a byte
    sums = {k: float(v.detach()) for k, v in plain.forward(model, None, plain.batch("test", np.arange(4))).items()}
    metrics = plain.metrics(sums)
    assert math.isclose(metrics["bpb"], metrics["loss"] / math.log(2), rel_tol=1e-9)
    task = Text(spec(tmp_path / "c", tmp_path, tokenizer=str(bpe)), tokenizer=HFTokenizer.load(bpe))
    batch = task.batch("test", np.arange(task.size("test")))
    sums = {k: float(v.detach()) for k, v in task.forward(model, None, batch).items()}
    tok = task.tokenizer
    lengths = tok.byte_lengths()
    for text in (doc(3), doc(17), "ünïcödé — ∑ 🙂"):  # byte-level BPE: each id stands for a fixed run of bytes
        assert lengths[tok.encode(text)].sum() == len(text.encode("utf-8"))
    assert lengths[tok.eos_id] == 0
    assert sums["bytes"] == lengths[batch["labels"].flatten().numpy()].sum()
    assert math.isclose(task.metrics(sums)["bpb"], sums["loss_sum"] / sums["bytes"] / math.log(2))


def test_max_tokens_caps_the_training_stream(tmp_path):
    text_corpus(tmp_path / "c", 30)
    task = Text(spec(tmp_path / "c", tmp_path, max_tokens=100), tokenizer=ByteTokenizer.for_vocab(259))
    assert task.size("train") == (100 - 1) // 16


def test_a_tokenizer_travels_with_the_run_through_generate_and_from_pretrained(tmp_path, bpe):
    text_corpus(tmp_path / "c", 30)
    tok_path = tmp_path / "mine.json"
    tok_path.write_bytes(bpe.read_bytes())
    data = text_recipe(tmp_path, vocab=300, steps=2, tokenizer=str(tok_path))
    run = tmp_path / "run"
    trained = run_cli("train", write_recipe(tmp_path / "r.toml", data), "--out", run, "-q")
    assert trained.exit_code == 0, trained.output
    tok_path.unlink()  # the run's own copy is what generation, evaluation and loading use
    lm = pulse.PulseForCausalLM.from_pretrained(run)
    assert isinstance(lm.tokenizer, HFTokenizer) and lm.tokenizer.digest() == HFTokenizer.load(bpe).digest()
    assert lm.tokenizer.encode("document 7") == HFTokenizer.load(bpe).encode("document 7")
    shown = run_cli("generate", run, "--prompt", "document", "-n", "4")
    assert shown.exit_code == 0 and shown.stdout.startswith("document"), shown.output
    with pytest.warns(PulseWarning, match="stored with the run"):  # a stored absolute task.path that exists is used
        assert run_cli("eval", run, "--json").exit_code == 0
    typed = [f"task.path={json.dumps(str(tmp_path / 'c'))}", f"task.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    evaluated = run_cli("eval", run, *[a for t in typed for a in ("--set", t)], "--json")
    assert evaluated.exit_code == 0, evaluated.output  # and typed ones are; the tokenizer is the run's own
    lm.save_pretrained(tmp_path / "saved")
    assert pulse.PulseForCausalLM.from_pretrained(tmp_path / "saved").tokenizer.digest() == lm.tokenizer.digest()
    stored = run / "tokenizer.json"
    stored.write_text(stored.read_text().replace('"<|pad|>"', '"<|PAD|>"'))
    refused = run_cli("generate", run, "--prompt", "a")
    assert refused.exit_code == 2 and "not the tokenizer these weights were saved with" in refused.stderr


def test_resuming_or_fine_tuning_with_another_tokenizer_is_refused(tmp_path, bpe):
    text_corpus(tmp_path / "c", 30)
    data = text_recipe(tmp_path, vocab=300, steps=2)
    path = write_recipe(tmp_path / "r.toml", data)
    assert run_cli("train", path, "--out", tmp_path / "bytes", "-q").exit_code == 0
    result = run_cli("train", path, "--set", f"task.tokenizer={json.dumps(str(bpe))}", "--init", tmp_path / "bytes",
                     "--out", tmp_path / "ft", "-q")
    assert result.exit_code == 2 and "trained with another tokenizer" in result.stderr, result.output


@pytest.mark.parametrize("case, message", [
    ("small vocab", r"model.vocab_size = 259 cannot hold the ids of the tokenizer .*\(300 ids\); set "
                    r"model.vocab_size = 300"),
    ("not a tokenizer", r"is not a tokenizer the `tokenizers` library can read"),
    ("missing tokenizer", r"no such file"),
    ("refuse utf8", r"not UTF-8 .*task.invalid_utf8 = \"skip\""),
    ("empty", r"holds no documents"),
    ("tiny split", r"fewer than seq_len \+ 1"),
])
def test_bad_input_is_one_located_error_with_exit_2_and_no_cache_left(tmp_path, bpe, case, message):
    text_corpus(tmp_path / "c", 10)
    task = {"kind": "text", "path": str(tmp_path / "c"), "seq_len": 16, "cache_dir": str(tmp_path / "cache")}
    vocab = 300
    if case == "small vocab":
        task["tokenizer"], vocab = str(bpe), 259
    elif case == "not a tokenizer":
        (tmp_path / "bad.json").write_text('{"hello": 1}')
        task["tokenizer"] = str(tmp_path / "bad.json")
    elif case == "missing tokenizer":
        task["tokenizer"] = str(tmp_path / "nope.json")
    elif case == "refuse utf8":
        (tmp_path / "c/latin1.txt").write_bytes("café".encode("latin-1"))
        task["invalid_utf8"] = "refuse"
    elif case == "empty":
        (tmp_path / "e.jsonl").write_text("\n\n")
        task["path"] = str(tmp_path / "e.jsonl")
    else:
        task["seq_len"] = 4000
    data = {**text_recipe(tmp_path, vocab=vocab), "task": task}
    result = run_cli("data", "prepare", write_recipe(tmp_path / "r.toml", data))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert " ".join(result.stderr.split()).count("error:") == 1
    import re

    assert re.search(message, " ".join(result.stderr.split())), result.stderr
    cache = tmp_path / "cache"
    assert not cache.exists() or not list(cache.iterdir())


def test_tokenizer_train_cli_writes_a_tokenizer_and_keeps_an_existing_file(tmp_path):
    text_corpus(tmp_path / "c", 20)
    out = tmp_path / "tok.json"
    result = run_cli("tokenizer", "train", tmp_path / "c", "--vocab-size", "280", "--out", out, "--min-frequency", "1")
    assert result.exit_code == 0, result.output
    tok = HFTokenizer.load(out)
    assert tok.vocab_size == 280 and (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
    text = "document 3: ünïcödé"
    assert tok.decode(tok.encode(text)) == text
    again = run_cli("tokenizer", "train", tmp_path / "c", "--vocab-size", "280", "--out", out)
    assert again.exit_code == 2 and "already exists" in again.stderr
    folder = run_cli("tokenizer", "train", tmp_path / "c", "--vocab-size", "280", "--out", tmp_path / "tokdir")
    assert folder.exit_code == 0 and HFTokenizer.load(tmp_path / "tokdir").eos_id == 1


def test_a_tokenizer_learned_from_a_recipe_reads_only_its_training_documents(tmp_path):
    text_corpus(tmp_path / "c", 40)
    s = spec(tmp_path / "c", tmp_path, val_fraction=0.25)
    seen = []
    train_bpe([], vocab_size=280, spec=s, min_frequency=1, progress=seen.append)
    corpus = open_corpus(s, ByteTokenizer(specials=True))
    assert seen[-1]["documents"] == corpus.manifest["files"]["train"]["documents"] == 30
    data = text_recipe(tmp_path, tokenizer=str(tmp_path / "not-yet.json"))
    recipe = write_recipe(tmp_path / "r.toml", data)  # it names the tokenizer about to be learned
    result = run_cli(
        "tokenizer", "train", "--recipe", recipe, "--vocab-size", "280", "--out", tmp_path / "not-yet.json"
    )
    assert result.exit_code == 0, result.output
    assert run_cli("data", "prepare", recipe, "--set", "model.vocab_size=280").exit_code == 0


def test_inspect_says_whether_the_cache_is_fresh(tmp_path):
    text_corpus(tmp_path / "c", 20)
    data = text_recipe(tmp_path, vocab=256)
    recipe = write_recipe(tmp_path / "r.toml", data)
    before = json.loads(run_cli("data", "inspect", recipe, "--json").stdout)
    assert before["cache_state"] == "missing" and before["documents"] == 20
    assert run_cli("data", "prepare", recipe).exit_code == 0
    after = json.loads(run_cli("data", "inspect", recipe, "--json").stdout)
    assert after["cache_state"] == "fresh" and after["train_documents"] + after["val_documents"] == 20
    assert after["bytes_per_token"] == 1.0 and after["text_bytes"] == sum(
        len(p.read_bytes()) for p in (tmp_path / "c").iterdir())


def test_the_data_extra_missing_is_one_line_naming_it(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith(("pyarrow", "datasets")):
            raise ImportError(f"No module named '{name}'")
        return real(name, *args, **kwargs)

    (tmp_path / "c.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    s = spec(tmp_path / "c.parquet", tmp_path)
    with pytest.raises(PulseError, match=r"needs the `data` extra \(pip install \"pulse\[data\]\"\)"):
        list(documents(corpus_files(s)[0], s))


def test_the_default_corpus_is_the_standard_library():
    files = corpus_files(TextSpec())
    assert files and all(f.path.suffix == ".py" for f in files[:50])
    assert not any("site-packages" in f.path.parts for f in files)
    assert any(f.path.name == "os.py" for f in files)
    assert os.path.isdir(files[0].path.parent)


def test_the_context_curve_bins_positions_past_the_training_length_and_skips_with_a_reason(tmp_path):
    text_corpus(tmp_path / "c", 200)
    data = {"model": {"kind": "lm", "vocab_size": 259, "dim": 16, "depth": 2, "layout": ["pulse", "attn"],
                      "mixers": {"attn": {"kind": "attention", "num_heads": 2},
                                 "pulse": {"kind": "pulse", "num_slots": 4, "chunk_size": 8}},
                      "positions": {"kind": "rotary"}},
            "task": {"kind": "text", "path": str(tmp_path / "c"), "seq_len": 16, "val_fraction": 0.3,
                     "cache_dir": str(tmp_path / "cache")},
            "train": {"steps": 2, "batch_size": 2, "eval_every": 0, "threads": 1, "device": "cpu"}}
    run = tmp_path / "run"
    assert run_cli("train", write_recipe(tmp_path / "r.toml", data), "--out", run, "-q").exit_code == 0
    shown = run_cli("eval", run, "--context-curve", "16,128,100k", "--windows", "2", "--json",
                    "--set", f"task.path={json.dumps(str(tmp_path / 'c'))}",
                    "--set", f"task.cache_dir={json.dumps(str(tmp_path / 'cache'))}")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    ok = [p for p in doc["points"] if p["status"] == "ok"]
    assert [p["length"] for p in ok] == [16, 128] and doc["train_seq_len"] == 16
    assert [(b["start"], b["end"]) for b in ok[1]["bins"]] == [(0, 64), (64, 128)]
    assert ok[1]["state_bytes"] > ok[0]["state_bytes"]  # the attention layer's cache grows with the window
    skipped = doc["points"][-1]
    assert skipped["status"] == "skipped" and "held-out text has" in skipped["reason"]
    assert (run / "context-curve.json").is_file() and (run / "context-curve.png").stat().st_size > 1000
    assert all(math.isfinite(b["bpb"]) and b["bpb"] > 0 for p in ok for b in p["bins"])
    budget = run_cli("eval", run, "--context-curve", "16,128", "--windows", "2", "--max-seconds", "1e-9",
                     "--set", f"task.path={json.dumps(str(tmp_path / 'c'))}",
                     "--set", f"task.cache_dir={json.dumps(str(tmp_path / 'cache'))}")
    assert budget.exit_code == 0 and "projected" in budget.stdout and "GFLOP/s" in budget.stdout, budget.output
    mqar = run_cli("eval", run, "--context-curve", "16", "--task", "mqar")
    assert mqar.exit_code == 2 and "reads held-out text" in mqar.stderr


def test_a_passkey_run_trains_and_its_grid_is_a_heatmap_and_any_lm_run_can_be_graded(tmp_path):
    data = {"model": {"kind": "lm", "vocab_size": 259, "dim": 16, "depth": 1, "layout": ["pulse"],
                      "mixers": {"pulse": {"kind": "pulse", "gate": "delta", "num_slots": 4, "chunk_size": 16}}},
            "task": {"kind": "passkey", "seq_len": 128, "num_test": 4},
            "train": {"steps": 2, "batch_size": 2, "eval_every": 0, "threads": 1, "device": "cpu"}}
    run = tmp_path / "run"
    trained = run_cli("train", write_recipe(tmp_path / "r.toml", data), "--out", run, "-q")
    assert trained.exit_code == 0, trained.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric"] == "accuracy" and "digit_accuracy" in summary["eval"]
    shown = run_cli("eval", run, "--passkey", "128,256", "--depths", "0,1", "--trials", "2", "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert [(c["length"], c["depth"]) for c in doc["cells"]] == [(128, 0.0), (128, 1.0), (256, 0.0), (256, 1.0)]
    assert (run / "passkey.png").stat().st_size > 1000 and doc["train_seq_len"] == 128
    bad = run_cli("eval", run, "--passkey", "128", "--depths", "0,2")
    assert bad.exit_code == 2 and "between 0 and 1" in bad.stderr


@pytest.mark.parametrize("reset", [True, False])
def test_packed_batches_start_documents_at_each_eos(tmp_path, reset):
    """task.reset_at_eos: the batch marks each eos as a document start, and the model's loss on a window
    then equals that of its documents alone; off, nothing is marked."""
    text_corpus(tmp_path / "c", 30)
    recipe = pulse.specs.load.validate(text_recipe(tmp_path, reset_at_eos=reset))
    task = Text(recipe.task, tokenizer=tokenizer_of(recipe))
    batch = task.batch("train", np.arange(task.size("train")))
    keep = (batch["ids"] == 257).any(dim=1)
    assert bool(keep.any())  # some windows hold document boundaries
    batch = {name: value[keep][:3] for name, value in batch.items()}
    if not reset:
        assert "doc_starts" not in batch
        return
    assert torch.equal(batch["doc_starts"], batch["ids"] == 257)
    torch.manual_seed(0)
    lm = pulse.build_model(recipe, dtype=torch.float64)
    packed, _ = lm(batch["ids"], doc_starts=batch["doc_starts"])
    row = batch["ids"][0]
    bounds = sorted({0, *(row == 257).nonzero().flatten().tolist(), len(row)})
    alone = torch.cat([lm(row[None, lo:hi])[0] for lo, hi in zip(bounds[:-1], bounds[1:])], dim=1)
    torch.testing.assert_close(packed[:1], alone)
