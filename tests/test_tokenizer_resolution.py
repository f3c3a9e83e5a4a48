"""One tokenizer resolution (pulse.data.tokenizer.tokenizer_of): the stored tokenizer wins, then task.tokenizer,
then model.tokenizer; "bytes" is sized by the model's vocabulary; a vocabulary too small is one error, worded
once, naming the number to set. Tasks that read text are given their tokenizer when built, and check_model
only checks."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import pulse
from pulse.data.tokenizer import ByteTokenizer, HFTokenizer, check_fits, tokenizer_of
from pulse.errors import PulseError
from pulse.specs.tasks import MqarSpec, PasskeySpec, TextSpec
from pulse.storage.checkpoint import save_checkpoint
from pulse.tasks import Mqar, Passkey, Text, build_task, reads_text

# the one wording: what model.vocab_size is, whose ids it cannot hold, and the number to set
TOO_SMALL = re.compile(r"model\.vocab_size = (\d+) cannot hold the ids of the tokenizer .+ \((\d+) ids[^)]*\); "
                       r"set model\.vocab_size = (\d+)\.$")


def word_tokenizer(path: Path, words: list[str]) -> Path:
    """A word-level tokenizer.json: [UNK], the words, then <|endoftext|> (ids 0 … len(words) + 1)."""
    import tokenizers as lib

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}, "<|endoftext|>": len(words) + 1}
    tok = lib.Tokenizer(lib.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = lib.pre_tokenizers.WhitespaceSplit()
    path.write_text(tok.to_str())
    return path


def recipe(vocab: int = 259, **task):
    data = {"model": {"kind": "lm", "vocab_size": vocab, "dim": 16, "depth": 1, "layout": ["attn"],
                      "mixers": {"attn": {"kind": "attention", "num_heads": 2}}}}
    if task:
        data["task"] = {"kind": "text", **task}
    return pulse.recipe_from_dict(data)


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    return (word_tokenizer(tmp_path / "a.json", ["a", "b", "c"]),
            word_tokenizer(tmp_path / "b.json", ["x", "y", "z", "w", "v"]))


def test_the_stored_tokenizer_wins_over_the_one_the_recipe_names(files):
    a, b = files
    r = recipe(300, tokenizer=str(a))
    stored = HFTokenizer.load(b)
    assert tokenizer_of(r, stored=stored) is stored
    assert tokenizer_of(r).digest() == HFTokenizer.load(a).digest()


def test_task_tokenizer_comes_before_model_tokenizer(files):
    a, _ = files
    assert tokenizer_of(recipe(300, tokenizer=str(a))).digest() == HFTokenizer.load(a).digest()
    assert isinstance(tokenizer_of(recipe(300, tokenizer="bytes")), ByteTokenizer)
    # a task that names no tokenizer (mqar), or no task: model.tokenizer, "bytes"
    mqar = pulse.recipe_from_dict({**recipe(300).to_dict(), "task": {"kind": "mqar"}})
    for r in (mqar, recipe(300)):
        assert tokenizer_of(r).digest() == "bytes-259"


@pytest.mark.parametrize("vocab, eos, size", [(256, None, 256), (258, None, 256), (259, 257, 259), (8192, 257, 259)])
def test_bytes_is_sized_by_the_model_vocabulary(vocab, eos, size):
    tok = tokenizer_of(recipe(vocab))
    assert isinstance(tok, ByteTokenizer) and tok.eos_id == eos and tok.vocab_size == size
    assert tokenizer_of(recipe(vocab, tokenizer="bytes")).digest() == tok.digest()


def test_a_vocabulary_too_small_is_one_error_naming_the_number_to_set(files):
    a, b = files
    cases = [  # (what raises, model.vocab_size, the tokenizer's ids, the number to set)
        (lambda: tokenizer_of(recipe(3, tokenizer=str(a))), 3, 5, 5),
        (lambda: tokenizer_of(recipe(4), stored=HFTokenizer.load(b)), 4, 7, 7),
        (lambda: tokenizer_of(recipe(100)), 100, 256, 259),
        (lambda: ByteTokenizer.for_vocab(255), 255, 256, 259),
        (lambda: check_fits(ByteTokenizer(), 258), 258, 256, 259),
    ]
    for raise_, have, ids, want in cases:
        with pytest.raises(PulseError) as err:
            raise_()
        match = TOO_SMALL.search(str(err.value))
        assert match, str(err.value)
        assert tuple(map(int, match.groups())) == (have, ids, want), str(err.value)


def test_a_model_that_reads_no_text_has_no_tokenizer():
    with pytest.raises(PulseError, match="reads no text"):
        tokenizer_of(SimpleNamespace(model=SimpleNamespace(kind="sequence_pulse"), task=None))


def test_a_text_task_built_with_a_tokenizer_reads_with_it(tmp_path):
    (tmp_path / "c").mkdir()
    for i in range(6):
        (tmp_path / "c" / f"d{i}.txt").write_text(f"document {i} " * 40)
    spec = TextSpec(path=str(tmp_path / "c"), seq_len=16, cache_dir=str(tmp_path / "cache"))
    tok = ByteTokenizer.for_vocab(259)  # with eos: not the unsized default (256 ids, no eos)
    task = build_task(spec, tokenizer=tok)
    assert isinstance(task, Text) and task.tokenizer is tok
    corpus = task.prepare()
    assert corpus.manifest["tokenizer"] == "bytes-259" and 257 in set(corpus.train.tolist())
    assert task.reset_token == 257
    built_bare = build_task(spec)  # no tokenizer given: the one task.tokenizer names, unsized
    assert built_bare.tokenizer.digest() == "bytes-256"


def test_build_task_gives_the_tokenizer_only_to_tasks_that_read_text():
    tok = ByteTokenizer.for_vocab(259)
    assert reads_text(TextSpec()) and reads_text(PasskeySpec()) and not reads_text(MqarSpec())
    passkey = build_task(PasskeySpec(), tokenizer=tok)
    assert isinstance(passkey, Passkey) and passkey.tokenizer is tok
    mqar = build_task(MqarSpec(), tokenizer=tok)  # reads no text: built as without one
    assert isinstance(mqar, Mqar) and not hasattr(mqar, "tokenizer")


def test_check_model_only_checks_and_leaves_the_task_tokenizer_alone(files):
    a, _ = files
    model = pulse.build_model(recipe(259), device="meta")
    plain = ByteTokenizer(specials=False)
    task = build_task(PasskeySpec(), tokenizer=plain)
    task.check_model(model)
    assert task.tokenizer is plain and task.tokenizer.eos_id is None  # not refitted to the model's 259 ids
    text = build_task(TextSpec(tokenizer=str(a)), tokenizer=HFTokenizer.load(a))
    small = pulse.build_model(recipe(3), device="meta")
    before = text.tokenizer
    with pytest.raises(PulseError, match=TOO_SMALL):
        text.check_model(small)
    assert text.tokenizer is before


def test_source_tokenizer_gives_the_stored_one_to_every_command(tmp_path, files):
    a, b = files
    r = recipe(300, tokenizer=str(a))
    stored = HFTokenizer.load(b)
    save_checkpoint(pulse.build_model(r), r, tmp_path / "ckpt", tokenizer=stored)
    source = pulse.api.source.open_source(tmp_path / "ckpt")
    assert source.tokenizer.digest() == stored.digest() != HFTokenizer.load(a).digest()
    lm = pulse.PulseForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert lm.tokenizer.digest() == stored.digest()
    fresh = pulse.PulseForCausalLM(r, model=pulse.build_model(r))  # no stored tokenizer: the recipe's
    assert fresh.tokenizer.digest() == HFTokenizer.load(a).digest()
