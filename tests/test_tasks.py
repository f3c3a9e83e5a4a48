"""Tasks: each generator builds exactly the examples its docstring describes, batches are a
pure function of (seed, step, micro-batch, rank, world), and every task scores a model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pulse
from pulse import registry
from pulse.data.tokenizer import ByteTokenizer
from pulse.errors import PulseError
from pulse.specs.describe import describe
from pulse.specs.task_base import TaskSpec
from pulse.specs.tasks import CopySpec, ListOpsSpec, MqarSpec, SelectiveCopySpec, TextSpec
from pulse.tasks import IGNORE, Copy, ListOps, Mqar, SelectiveCopy, Text
from pulse.tasks.base import Task, eval_indices, rng_for, train_indices
from pulse.tasks.listops import TOKEN_ID, VOCAB, evaluate, expression
from pulse.tasks.mqar import generate as generate_mqar
from pulse.tasks.selective_copy import generate as generate_selective_copy
from test_task_contract import MODEL, build, example_recipe


def tiny_lm(vocab: int, dim: int = 16):
    return pulse.build_model(pulse.recipe_from_dict({"model": {
        "kind": "lm", "vocab_size": vocab, "dim": dim, "depth": 1, "layout": ["attn"],
        "mixers": {"attn": {"kind": "attention", "num_heads": 2}}}}))


def tiny_sequence(input_dim: int, output_dim: int, mode: str):
    return pulse.build_model(pulse.recipe_from_dict({"model": {
        "kind": "sequence_pulse", "input_dim": input_dim, "output_dim": output_dim, "output_mode": mode,
        "dim": 16, "depth": 1, "layout": ["attn"], "mixers": {"attn": {"kind": "attention", "num_heads": 2}}}}))


def test_the_shipped_task_kinds_are_registered():
    assert set(registry.kinds("task")) >= {"mqar", "selective_copy", "copy", "listops", "text", "passkey", "babi",
                                           "lra_text", "lra_retrieval", "pathfinder", "lra_image"}


# ---- every registered kind (a new one is covered unedited: tests/toy_task.py) ------------------------------

@pytest.mark.parametrize("kind", registry.kinds("task"))
def test_every_task_kind_is_registered_and_builds(kind, tmp_path):
    entry = registry.get(kind, "task")
    assert issubclass(entry.spec, TaskSpec), f"{kind}: derive its spec from pulse.specs.task_base.TaskSpec"
    recipe = example_recipe(kind, tmp_path)
    task = build(recipe)
    assert type(task) is entry.module and isinstance(task, Task)
    assert pulse.recipe_from_dict(recipe.to_dict()).task == recipe.task, "a recipe of it does not round-trip"


@pytest.mark.parametrize("kind", registry.kinds("task"))
def test_every_task_kind_is_described_with_its_seed(kind):
    info = describe(kind)
    assert info.role == "task" and info.doc
    seed = next(p for p in info.parameters if p.name == "seed")
    assert seed.default == 0 and seed.description


@pytest.mark.parametrize("kind", registry.kinds("task"))
def test_every_task_kind_names_a_bad_seed_in_words(kind):
    with pytest.raises(PulseError, match=r"task\.seed: input should be greater than or equal to 0"):
        pulse.recipe_from_dict({"model": MODEL, "task": {"kind": kind, "seed": -1}})


def test_unknown_task_kind_names_the_nearest():
    with pytest.raises(PulseError, match=r"task: unknown task kind `mqr` \(did you mean `mqar`\?\)"):
        pulse.recipe_from_dict({"model": {"from": "transformer-small"}, "task": {"kind": "mqr"}})


# ---- sampling -------------------------------------------------------------------------------------

@settings(deadline=None)
@given(n=st.integers(3, 40), batch=st.sampled_from([4, 8, 12]), step=st.integers(0, 30), seed=st.integers(0, 5))
def test_ranks_and_micro_batches_partition_the_global_batch(n, batch, step, seed):
    whole = train_indices(n, step, batch_size=batch, seed=seed)
    for world, accum in ((2, 1), (1, 2), (2, 2)):
        parts = [train_indices(n, step, batch_size=batch, seed=seed, micro=m, accum=accum, rank=r, world=world)
                 for r in range(world) for m in range(accum)]
        assert np.array_equal(np.concatenate(parts), whole)


def test_each_epoch_visits_every_example_once_and_is_reproducible():
    n, batch = 10, 5
    first = np.concatenate([train_indices(n, s, batch_size=batch, seed=1) for s in range(2)])
    second = np.concatenate([train_indices(n, s, batch_size=batch, seed=1) for s in range(2, 4)])
    assert sorted(first) == list(range(n)) == sorted(second)
    assert not np.array_equal(first, second)
    assert np.array_equal(train_indices(n, 3, batch_size=batch, seed=1), train_indices(n, 3, batch_size=batch, seed=1))
    assert not np.array_equal(
        train_indices(n, 0, batch_size=batch, seed=1), train_indices(n, 0, batch_size=batch, seed=2)
    )


def test_eval_shards_cover_the_held_out_set():
    shards = [np.concatenate(list(eval_indices(11, 3, rank=r, world=3))) for r in range(3)]
    assert sorted(np.concatenate(shards)) == list(range(11))


def test_batch_size_must_split_over_processes_and_micro_batches():
    with pytest.raises(PulseError, match="divisible by train.grad_accum × processes"):
        train_indices(10, 0, batch_size=6, seed=0, accum=2, world=2)


# ---- MQAR -----------------------------------------------------------------------------------------

def test_mqar_matches_the_zoology_layout():
    spec = MqarSpec(vocab_size=64, seq_len=32, num_kv_pairs=4, random_non_queries=False)
    inputs, labels = generate_mqar(spec, 50, rng_for(0, "train"))
    assert inputs.shape == labels.shape == (50, 32)
    half, k = 32, 4
    for x, y in zip(inputs.tolist(), labels.tolist()):
        keys, values = x[0 : 2 * k : 2], x[1 : 2 * k : 2]
        assert all(1 <= key < half for key in keys) and len(set(keys)) == k
        assert all(half <= v < 64 for v in values) and len(set(values)) == k
        pairs = dict(zip(keys, values))
        queried = [t for t in range(32) if y[t] != IGNORE]
        assert len(queried) == k and all(t >= 2 * k and (t - 2 * k) % 2 == 0 for t in queried)
        assert sorted(x[t] for t in queried) == sorted(keys)
        assert all(y[t] == pairs[x[t]] for t in queried)
        assert all(x[t] == 0 for t in range(2 * k, 32) if t not in queried)


def test_mqar_mixture_trains_on_each_setting_padded_and_tests_on_its_own():
    spec = MqarSpec(vocab_size=64, seq_len=32, num_kv_pairs=4, mixture=[(16, 2, 30), (32, 4, 20)])
    task = Mqar(spec)
    assert task.size("train") == 50 and task.size("test") == spec.num_test
    batch = task.batch("train", np.arange(50))
    ids, labels = batch["ids"], batch["labels"]
    assert ids.shape == labels.shape == (50, 32)
    short, long = labels[:30], labels[30:]
    assert ((short != IGNORE).sum(1) == 2).all() and ((long != IGNORE).sum(1) == 4).all()
    assert (ids[:30, 16:] == 0).all() and (short[:, 16:] == IGNORE).all()  # padding: no token, no label
    assert (ids[30:, 16:] != 0).any()
    assert task.batch("test", np.arange(4))["ids"].shape == (4, 32)
    with pytest.raises(PulseError, match=r"mixture entry \[64, 2, 10\] needs an even seq_len ≤ task.seq_len \(32\)"):
        pulse.recipe_from_dict({"model": {"from": "transformer-small"},
                                "task": {"kind": "mqar", "seq_len": 32, "mixture": [[64, 2, 10]]}})


def test_mqar_query_distances_follow_the_power_law():
    spec = MqarSpec(vocab_size=512, seq_len=256, num_kv_pairs=1, random_non_queries=False)
    _, labels = generate_mqar(spec, 4000, rng_for(3, "train"))
    gaps = ((labels != IGNORE).float().argmax(dim=1) - 2) // 2
    space = (256 - 2) // 2
    p = 0.01 * np.arange(1, space + 1) ** (0.01 - 1)
    p /= p.sum()
    counts = np.bincount(gaps.numpy(), minlength=space)
    # expected counts are p·n; the shortest gap alone carries ~ a fifth of the mass
    assert abs(counts[0] / 4000 - p[0]) < 0.03
    assert abs(gaps.float().mean().item() - (p * np.arange(space)).sum()) < 2.0


def test_mqar_random_non_queries_keeps_pairs_and_labels():
    spec = MqarSpec(vocab_size=64, seq_len=32, num_kv_pairs=4)
    inputs, labels = generate_mqar(spec, 20, rng_for(0, "train"))
    plain, plain_labels = generate_mqar(spec.model_copy(update={"random_non_queries": False}), 20, rng_for(0, "train"))
    assert torch.equal(labels, plain_labels)
    assert torch.equal(inputs[:, :8], plain[:, :8])
    assert (inputs[:, 8:] != 0).float().mean() > 0.9


def test_mqar_train_and_test_sets_differ_and_repeat_by_seed():
    task = Mqar(MqarSpec(vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=16, num_test=16))
    again = Mqar(MqarSpec(vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=16, num_test=16))
    idx = np.arange(16)
    assert not torch.equal(task.batch("train", idx)["ids"], task.batch("test", idx)["ids"])
    assert torch.equal(task.batch("test", idx)["ids"], again.batch("test", idx)["ids"])


@pytest.mark.parametrize("params, message", [
    ({"seq_len": 33}, "must be even"),
    ({"vocab_size": 32, "seq_len": 32}, "must exceed seq_len"),
    ({"seq_len": 16, "num_kv_pairs": 5}, "seq_len ≥ 4·num_kv_pairs"),
])
def test_mqar_settings_are_checked(params, message):
    with pytest.raises(PulseError, match=message):
        pulse.recipe_from_dict({"model": {"from": "transformer-small"}, "task": {"kind": "mqar", **params}})


def test_mqar_scores_only_query_positions_and_needs_the_vocabulary():
    task = Mqar(MqarSpec(vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=8, num_test=8))
    with pytest.raises(PulseError, match="set model.vocab_size = 64"):
        task.check_model(tiny_lm(32))
    model = tiny_lm(64)
    task.check_model(model)
    batch = task.train_batch(0, batch_size=4, seed=0)
    sums = task.forward(model, None, batch)
    assert sums["count"].item() == task.targets(batch) == 16
    full, _ = model(batch["ids"])
    mask = batch["labels"] != IGNORE
    expected = torch.nn.functional.cross_entropy(full[mask], batch["labels"][mask], reduction="sum")
    torch.testing.assert_close(sums["loss_sum"], expected)
    metrics = task.metrics({k: float(v.detach()) for k, v in sums.items()})
    assert 0 <= metrics["accuracy"] <= 1 and math.isclose(metrics["loss"], expected.item() / 16, rel_tol=1e-5)


# ---- selective copying ------------------------------------------------------------------------------

def test_selective_copy_answers_are_the_content_in_order():
    spec = SelectiveCopySpec(vocab_size=10, seq_len=40, num_tokens=5)
    inputs, labels = generate_selective_copy(spec, 30, rng_for(0, "train"))
    blank, marker, region = 8, 9, 40 - 5 - 1
    for x, y in zip(inputs.tolist(), labels.tolist()):
        content = [t for t in x[:region] if t != blank]
        assert len(content) == 5 and all(0 <= t < 8 for t in content)
        assert x[region] == marker and x[region + 1 :] == [blank] * 5
        assert y[: region + 1] == [IGNORE] * (region + 1) and y[region + 1 :] == content


def test_selective_copy_scores_a_model():
    task = SelectiveCopy(SelectiveCopySpec(vocab_size=10, seq_len=24, num_tokens=4, num_train=8, num_test=8))
    model = tiny_lm(10)
    sums = task.forward(model, None, task.train_batch(0, batch_size=4, seed=0))
    assert sums["count"].item() == 16 and torch.isfinite(sums["loss_sum"])


# ---- NTM copy -----------------------------------------------------------------------------------------

def test_copy_examples_recall_the_vectors_after_the_delimiter():
    task = Copy(CopySpec(bits=4, min_len=2, max_len=6, num_train=20))
    batch = task.batch("train", np.arange(20))
    for ids, labels in zip(batch["ids"].tolist(), batch["labels"].tolist()):
        length = ids.index(task.delimiter)
        assert 2 <= length <= 6
        assert labels[length + 1 : 2 * length + 1] == ids[:length]
        assert all(v == IGNORE for i, v in enumerate(labels) if not length < i <= 2 * length)
        assert all(t == task.blank for t in ids[length + 1 :])


def test_copy_test_lengths_can_be_longer_than_training():
    task = Copy(CopySpec(min_len=1, max_len=5, eval_min_len=10, eval_max_len=10, num_test=4))
    batch = next(task.eval_batches(4))
    assert (batch["labels"] != IGNORE).sum(dim=1).tolist() == [10] * 4
    with pytest.raises(PulseError, match="eval_min_len"):
        pulse.recipe_from_dict({"model": {"from": "transformer-small"},
                                "task": {"kind": "copy", "eval_min_len": 9, "eval_max_len": 8}})


@pytest.mark.parametrize("family", ["tokens", "continuous"])
def test_copy_scores_token_and_sequence_models(family):
    task = Copy(CopySpec(bits=3, min_len=1, max_len=4, num_train=8, num_test=8))
    model = tiny_lm(task.vocab_size) if family == "tokens" else tiny_sequence(4, 3, "all")
    task.check_model(model)
    batch = task.train_batch(0, batch_size=4, seed=0)
    sums = task.forward(model, None, batch)
    sums["loss_sum"].backward()
    metrics = task.metrics({k: float(v.detach()) for k, v in sums.items()})
    assert set(metrics) == {"loss", "bit_accuracy", "vector_accuracy", "seq_accuracy"}
    assert sums["count"].item() == task.targets(batch)
    assert 0 <= metrics["seq_accuracy"] <= 1 and 0 <= metrics["vector_accuracy"] <= 1
    # a row recalled whole has all its (≥ 1) vectors right: as counts, never more sequences than vectors right
    assert sums["sequences_right"] <= sums["vectors_right"]


def test_copy_rejects_a_sequence_model_of_the_wrong_shape():
    task = Copy(CopySpec(bits=3))
    with pytest.raises(PulseError, match="model.input_dim = 4"):
        task.check_model(tiny_sequence(5, 3, "all"))
    with pytest.raises(PulseError, match="model.output_mode = all"):
        task.check_model(tiny_sequence(4, 3, "last"))


# ---- ListOps --------------------------------------------------------------------------------------------

def test_listops_values_match_an_independent_evaluator():
    spec = ListOpsSpec(min_len=10, max_len=60, max_depth=4, max_args=5)
    import random

    rng = random.Random(0)
    for _ in range(200):
        tokens, value = expression(rng, spec)
        assert 10 <= len(tokens) <= 60 and tokens[0].startswith("[") and tokens[-1] == "]"
        assert evaluate(tokens) == value and 0 <= value <= 9
    assert evaluate("[MED 1 2 3 4 ]".split()) == 2 and evaluate("[SM 9 8 ]".split()) == 7
    assert evaluate("[MAX 2 9 [MIN 4 7 ] 0 ]".split()) == 9


def test_listops_batches_pad_and_repeat_by_index():
    task = ListOps(ListOpsSpec(min_len=10, max_len=40, max_depth=4, max_args=4, num_train=12))
    batch = task.batch("train", np.array([3, 7, 1]))
    assert batch["ids"].shape[1] == batch["lengths"].max()
    for row, length in enumerate(batch["lengths"].tolist()):
        assert (batch["ids"][row, length:] == TOKEN_ID["<pad>"]).all() and (batch["ids"][row, :length] > 0).all()
        tokens = [VOCAB[i] for i in batch["ids"][row, :length].tolist()]
        assert evaluate(tokens) == batch["labels"][row].item()
    fresh = ListOps(task.spec).batch("train", np.array([7]))
    assert torch.equal(fresh["ids"][0, : fresh["lengths"][0]], batch["ids"][1, : batch["lengths"][1]])


def test_listops_lengths_that_cannot_occur_are_rejected():
    with pytest.raises(PulseError, match="have at most 6 tokens"):
        pulse.recipe_from_dict({"model": {"from": "transformer-small"},
                                "task": {"kind": "listops", "max_depth": 2, "max_args": 4, "min_len": 50}})


def check_task_head(task, model, classes: int) -> None:
    """A classification task's head on a language model: its width, a backward pass through it, and right
    padding that changes nothing (a causal model never lets it reach the last real token)."""
    head = task.make_head(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == classes
    batch = task.train_batch(0, batch_size=4, seed=0)
    sums = task.forward(model, head, batch)
    sums["loss_sum"].backward()
    assert head.weight.grad is not None and sums["count"].item() == 4
    padded = {**batch, "ids": torch.cat([batch["ids"], torch.zeros(4, 5, dtype=torch.long)], dim=1)}
    torch.testing.assert_close(task.forward(model, head, padded)["loss_sum"], sums["loss_sum"])


def test_listops_reads_a_language_model_through_a_task_head():
    task = ListOps(ListOpsSpec(min_len=10, max_len=30, max_depth=3, max_args=4, num_train=8))
    check_task_head(task, tiny_lm(len(VOCAB)), 10)


def test_listops_drives_a_sequence_model_with_a_mask():
    task = ListOps(ListOpsSpec(min_len=10, max_len=30, max_depth=3, max_args=4, num_train=8))
    model = tiny_sequence(len(VOCAB), 10, "last")
    task.check_model(model)
    assert task.make_head(model) is None
    sums = task.forward(model, None, task.train_batch(0, batch_size=4, seed=0))
    assert torch.isfinite(sums["loss_sum"]) and sums["total"].item() == 4


# ---- text ----------------------------------------------------------------------------------------------

def test_text_batches_are_next_token_windows_and_bpb_is_nats_over_ln2(tmp_path):
    (tmp_path / "one.txt").write_bytes(bytes(range(128)) * 8)  # one document: split by position
    task = Text(TextSpec(path=str(tmp_path / "one.txt"), seq_len=32, val_fraction=0.25, eval_windows=4,
                         cache_dir=str(tmp_path / "cache")), tokenizer=ByteTokenizer.for_vocab(256))
    batch = task.train_batch(0, batch_size=2, seed=0)
    assert torch.equal(batch["ids"][:, 1:], batch["labels"][:, :-1])
    assert task.size("test") == 4 and len(list(task.eval_batches(3))) == 2
    assert task.prepare().manifest["split"] == "position"
    model = tiny_lm(256)
    sums = {k: float(v.detach()) for k, v in task.forward(model, None, batch).items()}
    metrics = task.metrics(sums)
    assert math.isclose(metrics["bpb"], metrics["loss"] / math.log(2)) and sums["count"] == 64


def test_text_missing_path_is_clear(tmp_path):
    with pytest.raises(PulseError, match="does not exist"):
        Text(TextSpec(path=str(tmp_path / "nope"), cache_dir=str(tmp_path))).prepare()




def test_passkey_examples_are_exact_length_with_the_answer_labelled_and_train_and_grid():
    from pulse.specs.tasks import PasskeySpec
    from pulse.tasks.passkey import KEY, Passkey, passkey_grid

    task = Passkey(PasskeySpec(seq_len=128, num_test=5, depth_min=0.0, depth_max=1.0))
    task.check_model(tiny_lm(259))
    batch = task.batch("train", np.arange(3))
    assert batch["ids"].shape == (3, 128) and ((batch["labels"] != IGNORE).sum(1) == 5).all()
    text = task.tokenizer.decode(torch.cat([batch["ids"][0], batch["labels"][0, -1:]]))
    key = text[-5:]
    assert key.isdigit() and KEY.format(key=key) in text and text.endswith("The pass key is " + key)
    test = task.batch("test", np.arange(5))  # depths spread evenly: the key moves from the start to the end
    places = [task.tokenizer.decode(r).find("The pass key is") for r in test["ids"]]
    assert places == sorted(places) and places[0] == 0
    model = tiny_lm(259)
    sums = {k: float(v.detach()) for k, v in task.forward(model, None, batch).items()}
    metrics = task.metrics(sums)
    assert 0 <= metrics["accuracy"] <= metrics["digit_accuracy"] <= 1 and sums["examples"] == 3
    cells = passkey_grid(model, task, [128, 192], [0.0, 1.0], trials=2)
    assert [(c["length"], c["depth"]) for c in cells] == [(128, 0.0), (128, 1.0), (192, 0.0), (192, 1.0)]
    with pytest.raises(PulseError, match="raise task.seq_len"):
        task.example("12345", 0.5, 20)
