"""LRA Text and Retrieval over byte-level documents: the folder layouts, the AAN reader, the
generated pairs, every bad input, and the model contract of both (one-tower and two-tower)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pulse
from pulse.errors import PulseError
from pulse.specs.tasks import LraRetrievalSpec, LraTextSpec
from pulse.tasks import LraRetrieval, LraText, build_task
from pulse.tasks.retrieval import SHARED, PairHead, generated_pair, read_pairs
from test_tasks import tiny_lm, tiny_sequence


def recipe(task: dict):
    return pulse.recipe_from_dict({"model": {"from": "transformer-small"}, "task": task})


def write(folder: Path, docs: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in docs.items():
        (folder / name).write_bytes(data)


def imdb(root: Path) -> Path:
    base = root / "aclImdb"
    for split, n in (("train", 3), ("test", 2)):
        write(base / split / "pos", {f"{i}_9.txt": f"{split} good film {i}".encode() for i in range(n)})
        write(base / split / "neg", {f"{i}_1.txt": f"{split} bad film {i}".encode() for i in range(n)})
        (base / split / "labeledBow.feat").write_text("0 0:1\n")
    write(base / "train" / "unsup", {"0_0.txt": b"no label"})
    (base / "imdb.vocab").write_text("the\n")
    return base


def labelled(root: Path, labels: dict[str, int], prefix: str = "") -> Path:
    for label, n in labels.items():
        write(root / label, {f"d{i}.txt": f"{prefix}{label} {i}".encode() for i in range(n)})
    return root


# ---- LRA Text ---------------------------------------------------------------------------------------------

def test_imdb_layout_reads_pos_and_neg_and_ignores_the_rest(tmp_path):
    task = LraText(LraTextSpec(path=str(imdb(tmp_path))))
    assert task.labels == ["neg", "pos"] and task.num_classes == 2 and task.vocab_size == 256
    assert task.size("train") == 6 and task.size("test") == 4
    texts = {bytes(task.encoded("train", i)[0].tolist()).decode(): task.encoded("train", i)[1] for i in range(6)}
    assert texts["train good film 2"] == 1 and texts["train bad film 0"] == 0 and "no label" not in texts


def test_label_folders_split_as_given_under_train_and_test(tmp_path):
    for split in ("train", "test"):
        labelled(tmp_path / split, {"sports": 2, "arts": 1, "news": 3}, prefix=split)
    task = build_task(recipe({"kind": "lra_text", "path": str(tmp_path)}).task)
    assert isinstance(task, LraText) and task.labels == ["arts", "news", "sports"] and task.num_classes == 3
    assert task.size("train") == task.size("test") == 6
    ids, label = task.encoded("test", 0)
    assert bytes(ids.tolist()) == b"testarts 0" and label == 0
    subset = LraText(task.spec.model_copy(update={"eval_examples": 2}))  # spread evenly: documents 0 and 3 of 6
    assert subset.size("test") == 2 and [subset.encoded("test", i)[1] for i in range(2)] == [0, 1]
    assert subset.size("train") == 6


def test_label_folders_alone_are_split_by_document_with_a_seed(tmp_path):
    labelled(tmp_path, {"a": 10, "b": 20})

    def split(seed: int) -> dict[str, set[bytes]]:
        task = LraText(LraTextSpec(path=str(tmp_path), test_fraction=0.2, seed=seed))
        return {s: {bytes(task.encoded(s, i)[0].tolist()) for i in range(task.size(s))} for s in ("train", "test")}

    first = split(0)
    assert len(first["train"]) == 24 and len(first["test"]) == 6 and not first["train"] & first["test"]
    assert sum(d.startswith(b"a ") for d in first["test"]) == 2  # 20% of each label
    assert split(0) == first and split(1) != first


def test_documents_are_bytes_cut_to_max_len(tmp_path):
    write(tmp_path / "x", {"long.txt": bytes(range(256)) * 3})
    write(tmp_path / "y", {"odd.txt": b"\xff\xfe not utf-8", "empty.txt": b""})
    write(tmp_path / "y", {f"more{i}.txt": b"y" for i in range(3)})
    task = LraText(LraTextSpec(path=str(tmp_path), max_len=100, test_fraction=0.5))
    docs = [task.encoded(s, i)[0] for s in ("train", "test") for i in range(task.size(s))]
    assert max(len(d) for d in docs) == 100 and all(d.dtype == np.int64 and d.max() < 256 for d in docs)
    assert any(d[:2].tolist() == [255, 254] for d in docs)
    assert any(d.tolist() == [0] for d in docs)  # an empty file reads as one byte 0
    batch = task.batch("train", np.arange(task.size("train")))
    assert batch["ids"].shape == (task.size("train"), int(batch["lengths"].max()))


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", "does not exist; set task.path"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file, not a folder"),
    (lambda p: (p / "f.txt").write_text("x") and p, "has no label folders"),
    (lambda p: labelled(p, {"only": 2}), "a single label folder `only`"),
    (lambda p: labelled(p, {"a": 2, "b": 0}), r"label folder .*b holds no files matching task.pattern `\*\.txt`"),
    (lambda p: labelled(p / "test", {"a": 1, "c": 1}) and labelled(p / "train", {"a": 1, "b": 1}).parent,
     r"different label folders \(only in train/: b; only in test/: c\)"),
    (lambda p: labelled(p / "train", {"a": 1, "b": 1}).parent, "has train/ but no test/"),
    (lambda p: labelled(p, {"a": 1, "b": 1}), "a single document, so none can be held out"),
])
def test_bad_folders_say_what_to_change(tmp_path, make, message):
    task = LraText(LraTextSpec(path=str(make(tmp_path))))
    with pytest.raises(PulseError, match=message):
        task.size("train")


def test_lra_text_needs_a_path_but_validation_reads_nothing(tmp_path):
    with pytest.raises(PulseError, match="task.path: required key is missing"):
        recipe({"kind": "lra_text"})
    spec = recipe({"kind": "lra_text", "path": str(tmp_path / "later")}).task
    assert spec.max_len == 4000 and isinstance(build_task(spec), LraText)  # the folder is read at first use


def test_lra_text_drives_both_model_families(tmp_path):
    labelled(tmp_path, {"a": 4, "b": 4, "c": 4})
    task = LraText(LraTextSpec(path=str(tmp_path), test_fraction=0.25))
    model = tiny_lm(256)
    task.check_model(model)
    head = task.make_head(model)
    assert head.out_features == 3
    sums = task.forward(model, head, task.train_batch(0, batch_size=4, seed=0))
    sums["loss_sum"].backward()
    assert head.weight.grad is not None and sums["count"].item() == 4
    with pytest.raises(PulseError, match="model.output_dim = 3"):
        task.check_model(tiny_sequence(256, 2, "mean"))
    seq = tiny_sequence(256, 3, "mean")
    task.check_model(seq)
    sums = task.forward(seq, task.make_head(seq), next(task.eval_batches(8)))
    sums["loss_sum"].backward()
    assert seq.proj.weight.grad is not None and sums["total"].item() == 3
    assert task.fit_model({"kind": "sequence_pulse", "input_dim": 16, "output_dim": 10})["output_dim"] == 3


# ---- LRA Retrieval: generated pairs ------------------------------------------------------------------------

def test_generated_pairs_are_balanced_and_drawn_from_their_index():
    spec = LraRetrievalSpec(max_len=300, num_train=40, num_topics=5)
    task = LraRetrieval(spec)
    labels = [task.pair("train", i)[2] for i in range(40)]
    assert sum(labels) == 20
    for i in range(40):
        a, b, label, source_a, source_b = generated_pair(task.world, spec, "train", i)
        assert (source_a == source_b) == bool(label) and 150 <= len(a) <= 300 and 150 <= len(b) <= 300
    batch = task.batch("train", np.array([7, 3]))
    alone = LraRetrieval(spec).batch("train", np.array([3]))
    for key in ("ids1", "ids2"):
        n = int(alone[key.replace("ids", "lengths")][0])
        assert torch.equal(alone[key][0, :n], batch[key][1, :n])
    assert not torch.equal(task.batch("test", np.array([3]))["ids1"], alone["ids1"])
    assert task.tokens(batch) == int(batch["lengths1"].sum() + batch["lengths2"].sum())


def test_generated_evidence_is_spread_over_both_documents():
    """A reader that knows no source and says "related" when the documents share a word pair outside the shared
    grammar: right on almost every pair from whole documents, near chance from their first 300 bytes."""
    spec = LraRetrievalSpec()
    world = LraRetrieval(spec).world
    index = {w: i for i, w in enumerate(world.words)}
    shared = {(a, int(world.shared[k, a])) for k in range(SHARED) for a in range(spec.lexicon_size)}

    def pairs_of(text: bytes) -> set[tuple[int, int]]:
        words = [index.get(w) for w in text.split(b" ")]
        return {(a, b) for a, b in zip(words, words[1:]) if a is not None and b is not None} - shared

    pairs = [generated_pair(world, spec, "test", i) for i in range(200)]
    for cut, low, high in ((300, 0.0, 0.6), (spec.max_len, 0.9, 1.0)):
        right = sum(bool(pairs_of(a[:cut]) & pairs_of(b[:cut])) == bool(label) for a, b, label, _, _ in pairs)
        assert low <= right / len(pairs) <= high


# ---- LRA Retrieval: AAN files ------------------------------------------------------------------------------

def aan(folder: Path, split: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"new_aan_pairs.{split}.tsv"
    path.write_text("".join(row + "\n" for row in rows))
    return path


def test_aan_tsv_reader_keeps_lra_column_order(tmp_path):
    aan(tmp_path, "train", ["1.0\tP1\tP2\tfirst paper\tsecond paper", "0\tP3\tP1\tthird paper\tfirst paper",
                            "0.0\tP2\tP3\tsecond paper\tthird paper"])
    aan(tmp_path, "eval", ["1\tA\tB\taa\tbb"])
    aan(tmp_path, "test", ["0\tA\tB\tcc\tdd", "1\tA\tB\tee\tff"])
    pairs = read_pairs(tmp_path / "new_aan_pairs.train.tsv", max_len=5)
    assert pairs.labels.tolist() == [1, 0, 0] and len(pairs.docs) == 3  # each distinct text stored once
    assert [bytes(pairs.docs[i].tolist()) for i in pairs.index[1]] == [b"third", b"first"]
    task = LraRetrieval(LraRetrievalSpec(path=str(tmp_path), max_len=5))
    assert task.size("train") == 3 and task.size("test") == 2
    a, b, label = task.pair("test", 0)
    assert bytes(a.tolist()) == b"cc" and bytes(b.tolist()) == b"dd" and label == 0
    held = LraRetrieval(LraRetrievalSpec(path=str(tmp_path / "new_aan_pairs"), held_out="eval"))
    assert held.pair("test", 0)[2] == 1 and held.size("train") == 3
    subset = LraRetrieval(LraRetrievalSpec(path=str(tmp_path / "new_aan_pairs.train.tsv"), eval_examples=1))
    assert subset.size("test") == 1 and subset.size("train") == 3


@pytest.mark.parametrize("rows, message", [
    (None, r"the AAN file .*new_aan_pairs.train.tsv does not exist"),
    (["1\tP1\tP2\tt1\tt2", "0\tP1\tP2\tonly four"], r"new_aan_pairs.train.tsv, line 2: 4 tab-separated columns"),
    (["2\tP1\tP2\tt1\tt2"], r"line 1: the label '2' is not 0 or 1"),
    (["yes\tP1\tP2\tt1\tt2"], r"line 1: the label 'yes' is not 0 or 1"),
])
def test_bad_aan_files_say_which_file_and_line(tmp_path, rows, message):
    if rows is not None:
        aan(tmp_path, "train", rows)
    with pytest.raises(PulseError, match=message):
        LraRetrieval(LraRetrievalSpec(path=str(tmp_path))).size("train")


# ---- LRA Retrieval: the two-tower model contract ------------------------------------------------------------

def padded(batch: dict, extra: int) -> dict:
    return {**batch, "ids1": torch.cat([batch["ids1"], torch.zeros(len(batch["labels"]), extra, dtype=torch.long)], 1)}


@pytest.mark.parametrize("family", ["lm", "sequence_last", "sequence_mean"])
def test_two_towers_share_one_encoder_and_ignore_padding(family):
    task = LraRetrieval(LraRetrievalSpec(max_len=64, num_train=8, num_topics=3))
    torch.manual_seed(0)
    model = tiny_lm(256) if family == "lm" else tiny_sequence(256, 12, family.split("_")[1])
    task.check_model(model)
    head = task.make_head(model)
    assert isinstance(head, PairHead) and head.hidden.in_features == 4 * (16 if family == "lm" else 12)
    batch = task.train_batch(0, batch_size=4, seed=0)
    sums = task.forward(model, head, batch)
    sums["loss_sum"].backward()
    assert all(p.grad is not None for p in head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        again = task.forward(model, head, padded(batch, 7))
        torch.testing.assert_close(again["loss_sum"], task.forward(model, head, batch)["loss_sum"])


def test_retrieval_checks_the_model_and_fits_its_table():
    task = LraRetrieval(LraRetrievalSpec())
    with pytest.raises(PulseError, match="set model.vocab_size = 256"):
        task.check_model(tiny_lm(128))
    with pytest.raises(PulseError, match="model.input_dim = 256"):
        task.check_model(tiny_sequence(16, 8, "last"))
    with pytest.raises(PulseError, match="model.output_mode = last"):
        task.check_model(tiny_sequence(256, 8, "all"))
    fitted = task.fit_model({"kind": "sequence_pulse", "input_dim": 16, "output_dim": 10, "output_mode": "all",
                             "dim": 96})
    assert (fitted["input_dim"], fitted["output_dim"], fitted["output_mode"]) == (256, 96, "last")
    assert task.fit_model({"kind": "sequence_pulse", "input_dim": 16, "output_dim": 10})["output_dim"] == 128
    assert task.fit_model({"kind": "lm", "vocab_size": 8192})["vocab_size"] == 256
