"""`pulse tokenizer train`: a byte-level BPE (GPT-2's scheme) learned from local files by `tokenizers`.

The documents come from the same readers as a text task's corpus (text files, JSON Lines,
Parquet, saved datasets), or from a text recipe's training split alone (`--recipe`: the held-out
documents stay unseen); a document that is not UTF-8 is skipped and counted. The
special tokens are <|bos|>, <|endoftext|> (eos) and <|pad|>, ids 0, 1, 2; every byte is
in the initial alphabet, so any text encodes. The result is one tokenizer.json that
`task.tokenizer` names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pulse.data.readers import corpus_files, documents
from pulse.data.tokenizer import FILE, HFTokenizer, _require_tokenizers
from pulse.errors import PulseError
from pulse.specs.tasks import TextSpec

SPECIALS = ["<|bos|>", "<|endoftext|>", "<|pad|>"]


def _documents(paths: list[str], fmt: str, field: str, seen: dict[str, int], spec: Any = None) -> Iterator[str]:
    from pulse.data.corpus import training_documents

    streams = [training_documents(spec)] if spec is not None else []
    for path in paths:
        one = TextSpec(path=path, format=fmt, text_field=field)
        streams += [documents(file, one) for file in corpus_files(one)]
    for stream in streams:
        for doc in stream:
            if isinstance(doc, bytes):
                try:
                    doc = doc.decode("utf-8")
                except UnicodeDecodeError:
                    seen["skipped"] += 1
                    continue
            seen["documents"] += 1
            seen["bytes"] += len(doc.encode("utf-8"))
            yield doc


def train_bpe(paths: list[str], *, vocab_size: int, fmt: str = "auto", text_field: str = "text",
              min_frequency: int = 2, progress: Callable[[dict[str, Any]], None] | None = None,
              spec: Any = None) -> HFTokenizer:
    """A byte-level BPE of `vocab_size` ids (specials included) learned from the documents under `paths`, and
    from the training split of a text task's corpus when `spec` (its TextSpec) is given: never its held-out
    documents, so the tokenizer has not seen what it will be evaluated on."""
    lib = _require_tokenizers()
    if vocab_size < 256 + len(SPECIALS):
        raise PulseError(f"--vocab-size {vocab_size}: a byte-level BPE needs at least {256 + len(SPECIALS)} ids "
                         f"(256 bytes and {len(SPECIALS)} special tokens).")
    if any(not str(path).strip() for path in paths):
        raise PulseError("an empty PATH would read the current directory; give the files, folders, globs or saved "
                         "datasets to learn from.")
    if not text_field:
        raise PulseError("--text-field is empty; give the JSON field or column that holds the text.")
    seen = {"documents": 0, "bytes": 0, "skipped": 0}

    def reported() -> Iterator[str]:
        for i, doc in enumerate(_documents(paths, fmt, text_field, seen, spec)):
            if progress is not None and i % 256 == 0:
                progress(dict(seen))
            yield doc
        if progress is not None:
            progress(dict(seen))

    tok = lib.Tokenizer(lib.models.BPE())
    tok.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = lib.decoders.ByteLevel()
    trainer = lib.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS,
                                      initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(reported(), trainer=trainer)
    if seen["documents"] == 0:
        where = ", ".join(paths) or "the recipe's training split"
        raise PulseError(f"no UTF-8 documents under {where} ({seen['skipped']} skipped as not UTF-8); "
                         "give files with text in them.")
    return HFTokenizer(tok, source="<trained>")


def write_tokenizer(tok: HFTokenizer, out: str | Path) -> Path:
    """`out` a .json file: the tokenizer alone; a folder: tokenizer.json and tokenizer_config.json in it."""
    from pulse.paths import atomic_write_text

    out = Path(out)
    if out.suffix == ".json":
        atomic_write_text(out, tok.tokenizer.to_str(pretty=True))
        return out
    return tok.save(out) if out.name else out / FILE
