"""Bad input at the data doors (issue 35): corpus readers, the [task] paths, the token cache, tokenizer ids.

Each is one clear PulseError (exit 2 from the CLI) naming the file and line or the setting to change:
never a traceback, a hang, a read outside task.path, or silently wrong tokens in the cache.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import pulse
from helpers import run_cli
from pulse.data.corpus import open_corpus, training_documents
from pulse.data.readers import corpus_files, documents
from pulse.data.tokenizer import ByteTokenizer, HFTokenizer, tokenizer_of
from pulse.errors import PulseError
from pulse.specs.tasks import TextSpec
from pulse.tasks.text import Text
from test_data import spec, text_corpus, text_recipe
from test_train import write_recipe


def one_error(result, pattern: str) -> str:
    """The CLI refused with exit 2 and one error matching `pattern` (whitespace folded), no traceback."""
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert text.count("error:") == 1 and re.search(pattern, text), text
    return text


@pytest.mark.parametrize("line, message", [
    ('{"text": "abc\\ud800def"}', r"c.jsonl:2: the text holds a lone surrogate, \\ud800 at character 3"),
    ('{"text": "x", "n": ' + "1" * 5001 + "}", r"c.jsonl:2: holds a number too long to read .*5001 digits"),
    ("[" * 100_000, r"c.jsonl:2: nested too deeply to read"),
])
@pytest.mark.audit("corpus readers", "clean")
def test_a_json_line_python_cannot_hold_is_one_located_error(tmp_path, line, message):
    (tmp_path / "c.jsonl").write_text('{"text": "a fine first document"}\n' + line + "\n")
    data = text_recipe(tmp_path, path=str(tmp_path / "c.jsonl"))
    one_error(run_cli("data", "prepare", write_recipe(tmp_path / "r.toml", data)), message)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.mark.audit("corpus readers", "correct")
def test_an_escaped_pair_and_a_byte_order_mark_still_read(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "smile \\ud83d\\ude00"}\n')
    s = spec(tmp_path / "c.jsonl", tmp_path)
    assert list(documents(corpus_files(s)[0], s)) == ["smile \U0001F600"]


@pytest.mark.parametrize("task, message", [
    ({"pattern": ""}, r"task.pattern: is empty; give a glob relative to task.path"),
    ({"pattern": "/etc/*"}, r"task.pattern: `/etc/\*` is absolute"),
    ({"pattern": "../**/*.txt"}, r"task.pattern: `../\*\*/\*.txt` climbs out of task.path"),
    ({"pattern": "sub/../../*.txt"}, r"climbs out of task.path"),
    ({"path": ""}, r"task.path: is empty, which would read the current directory; give the file or folder to read"),
    ({"path": "  "}, r"task.path: is empty"),
    ({"seed": -1}, r"task.seed: input should be greater than or equal to 0"),
    ({"kind": "lra_text", "path": "x", "pattern": "../*.txt"}, r"task.pattern: .* climbs out"),
    ({"kind": "babi", "path": ""}, r"task.path: is empty"),
    ({"kind": "mqar", "seed": -1}, r"task.seed: input should be greater than or equal to 0"),
    ({"train": {"seed": -1}}, r"train.seed: input should be greater than or equal to 0"),
])
@pytest.mark.audit("task paths and seeds", "clean")
def test_task_paths_patterns_and_seeds_are_refused_up_front(task, message):
    train = task.pop("train", None)
    data = {"model": {"from": "transformer-small"}, "task": {"kind": "text", **task}}
    with pytest.raises(PulseError, match=message):
        pulse.recipe_from_dict({**data, "train": train} if train else data)


@pytest.mark.audit("task paths and seeds", "correct")
def test_a_pattern_below_the_folder_reads_only_what_is_below_it(tmp_path):
    text_corpus(tmp_path / "c" / "sub", 3)
    (tmp_path / "outside.txt").write_text("not part of the corpus")
    s = TextSpec(path=str(tmp_path / "c"), pattern="sub/**/*.txt")
    assert [f.path.name for f in corpus_files(s)] == ["d000.txt", "d001.txt", "d002.txt"]


@pytest.mark.parametrize("what", ["fifo", "/dev/zero"])
@pytest.mark.audit("corpus readers", "clean")
def test_a_fifo_or_a_device_is_named_for_what_it_is_and_never_read(tmp_path, what):
    if what == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)  # nothing ever writes to it: opening it for reading would block forever
        kind = r"a FIFO \(named pipe\)"
    else:
        path, kind = Path(what), "a character device"  # reading it would never end
        assert path.is_char_device(), f"{path} is missing: POSIX provides it (as it provides os.mkfifo above)"
    for fmt in ("auto", "jsonl"):
        data = text_recipe(tmp_path, path=str(path), format=fmt)
        one_error(run_cli("data", "inspect", write_recipe(tmp_path / "r.toml", data)),
                  rf"task.path `{re.escape(str(path))}` is {kind}, not a regular file or a folder")


@pytest.mark.parametrize("how", ["cache_dir is a file", "PULSE_CACHE is a file", "read-only"])
@pytest.mark.audit("token cache", "clean")
def test_an_unwritable_cache_is_one_error_naming_the_folder_and_the_setting(tmp_path, monkeypatch, how):
    text_corpus(tmp_path / "c", 10)
    (tmp_path / "file").write_text("a file, not a folder")
    if how == "read-only":  # as root, chmod does not stop writes: the refusal the OS would give, simulated
        def refuse(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))

        monkeypatch.setattr(Path, "mkdir", refuse)
        with pytest.raises(PulseError, match=r"cannot write the token cache in .*cache: .*cache is read-only "
                                             r"\(Permission denied\); set task.cache_dir \(now `.*cache`\) to a "
                                             "folder this user can write"):
            open_corpus(spec(tmp_path / "c", tmp_path), ByteTokenizer())
        return
    data = text_recipe(tmp_path)
    env = {}
    if how == "cache_dir is a file":
        data["task"]["cache_dir"] = str(tmp_path / "file")
        setting = r"set task.cache_dir \(now `.*file`\)"
    else:
        del data["task"]["cache_dir"]
        env = {"PULSE_CACHE": str(tmp_path / "file")}
        setting = r"set PULSE_CACHE \(now `.*file`\) or task.cache_dir"
    result = run_cli("data", "prepare", write_recipe(tmp_path / "r.toml", data), env=env)
    one_error(result, rf"cannot write the token cache in .*file.*: .*file is a file, not a folder; {setting} to a "
                      "folder this user can write")


def sparse_tokenizer(path: Path) -> HFTokenizer:
    """A word-level tokenizer of four tokens numbered up to 70,001: more than uint16 holds, though only 4 ids."""
    import tokenizers as lib  # a core dependency: never skipped
    vocab = {"[UNK]": 0, "a": 1, "b": 70_000, "<|endoftext|>": 70_001}
    tok = lib.Tokenizer(lib.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = lib.pre_tokenizers.WhitespaceSplit()
    path.write_text(tok.to_str())
    return HFTokenizer.load(path)


@pytest.mark.audit("tokenizers", "correct")
def test_a_sparsely_numbered_tokenizer_widens_the_cache_and_names_the_model_vocab_it_needs(tmp_path):
    tok = sparse_tokenizer(tmp_path / "tok.json")
    assert tok.vocab_size == 70_002 and tok.eos_id == 70_001
    (tmp_path / "c").mkdir()
    for i in range(6):
        (tmp_path / "c" / f"d{i}.txt").write_text("a b " * (10 + i))
    corpus = open_corpus(spec(tmp_path / "c", tmp_path), tok)
    assert corpus.manifest["dtype"] == "uint32"
    ids = np.concatenate([corpus.train, corpus.val])
    assert set(np.unique(ids).tolist()) == {1, 70_000, 70_001}  # not 70,000 wrapped to 4,464
    recipe = pulse.recipe_from_dict({"model": {"vocab_size": 300}, "task": {
        "kind": "text", "path": str(tmp_path / "c"), "tokenizer": str(tmp_path / "tok.json")}})
    task = Text(recipe.task)  # built without a tokenizer: the file task.tokenizer names
    for check in (lambda: tokenizer_of(recipe), lambda: task.check_model(pulse.build_model(recipe, device="meta"))):
        with pytest.raises(PulseError, match=r"model.vocab_size = 300 cannot hold .*set model.vocab_size = 70002"):
            check()


@pytest.mark.audit("tokenizers", "clean")
def test_an_id_past_the_cache_integer_is_refused_not_wrapped(tmp_path):
    class Overflowing(ByteTokenizer):  # says 259 ids, emits one past uint16
        def encode_documents(self, docs):
            return [np.asarray([1, 2**16 + 3], dtype=np.int64) for _ in docs]

    text_corpus(tmp_path / "c", 4)
    with pytest.raises(PulseError, match=r"emitted id 65,539, outside the uint16 the cache chose"):
        open_corpus(spec(tmp_path / "c", tmp_path), Overflowing())
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.audit("token cache", "correct")
def test_a_same_size_edit_with_its_mtime_restored_is_a_new_cache_entry(tmp_path):
    text_corpus(tmp_path / "c", 10)
    s = spec(tmp_path / "c", tmp_path)
    first = open_corpus(s, ByteTokenizer())
    edited = tmp_path / "c" / "d003.txt"
    before = edited.stat()
    text = edited.read_bytes()
    edited.write_bytes(b"X" + text[1:])  # same size
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert edited.stat().st_size == before.st_size and edited.stat().st_mtime_ns == before.st_mtime_ns
    second = open_corpus(s, ByteTokenizer())
    assert not second.reused and second.root != first.root
    assert ord("X") in np.concatenate([second.train, second.val]).tolist()
    info = json.loads(run_cli("data", "inspect", write_recipe(tmp_path / "r.toml", text_recipe(tmp_path)),
                              "--json").stdout)
    assert "first and last MiB" in info["key_covers"]


@pytest.mark.audit("corpus readers", "clean")
def test_a_damaged_parquet_file_is_located(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="the data extra reads Parquet")
    import pyarrow.parquet as pq

    rows = [f"document {i} " + "word " * 50 for i in range(400)]
    pq.write_table(pa.table({"text": rows}), tmp_path / "c.parquet", row_group_size=100, compression="none")
    data = bytearray((tmp_path / "c.parquet").read_bytes())
    data[2000:20000:7] = b"\xff" * len(data[2000:20000:7])  # the first pages' bytes, the footer intact
    (tmp_path / "c.parquet").write_bytes(bytes(data))
    s = spec(tmp_path / "c.parquet", tmp_path)
    with pytest.raises(PulseError, match=r"c.parquet: the Parquet file cannot be read past row \d+ .*write it again"):
        list(documents(corpus_files(s)[0], s))


@pytest.mark.audit("tokenizers", "correct")
def test_a_one_document_corpus_is_cut_for_the_tokenizer_at_a_character_boundary(tmp_path):
    (tmp_path / "one.txt").write_bytes(("a" + "é" * 100).encode())  # 201 bytes: 95 % falls inside an é
    (head,) = training_documents(spec(tmp_path / "one.txt", tmp_path))
    assert head.decode("utf-8") == "a" + "é" * 94


@pytest.mark.parametrize("args, message", [
    (["", "--vocab-size", "300"], r"an empty PATH would read the current directory"),
    (["c.txt", "--text-field", "", "--vocab-size", "300"], r"--text-field is empty"),
])
@pytest.mark.audit("tokenizers", "clean")
def test_tokenizer_train_refuses_an_empty_path_or_field(tmp_path, args, message):
    (tmp_path / "c.txt").write_text("some text " * 20)
    args = [str(tmp_path / a) if a == "c.txt" else a for a in args]
    one_error(run_cli("tokenizer", "train", *args, "--out", tmp_path / "tok.json"), message)
    assert not (tmp_path / "tok.json").exists()


@pytest.mark.audit("token cache", "correct")
def test_a_cache_kept_inside_the_corpus_folder_is_not_read_as_text(tmp_path):
    text_corpus(tmp_path / "c", 10)
    s = TextSpec(path=str(tmp_path / "c"), seq_len=16, cache_dir=str(tmp_path / "c" / "cache"))
    first = open_corpus(s, ByteTokenizer())
    again = open_corpus(s, ByteTokenizer())
    assert again.reused and again.root == first.root and again.manifest["documents"] == 10


@pytest.mark.audit("corpus readers", "clean")
def test_a_null_text_is_named_null(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"text": null}\n')
    s = spec(tmp_path / "c.jsonl", tmp_path)
    with pytest.raises(PulseError, match=r"c.jsonl:2: the text field holds null \(no value\), not text"):
        list(documents(corpus_files(s)[0], s))


@pytest.mark.audit("tokenizers", "clean")
def test_a_broken_tokenizer_config_beside_a_tokenizer_is_named_not_ignored(tmp_path):
    sparse_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "<|endoftext|>",\n  oops}')
    with pytest.raises(PulseError, match=r"tokenizer_config.json is not valid JSON \(line 2, column 3"):
        HFTokenizer.load(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_bytes(b'{"eos_token": "\xff"}')
    with pytest.raises(PulseError, match=r"tokenizer_config.json is not UTF-8 text"):
        HFTokenizer.load(tmp_path / "tokenizer.json")
