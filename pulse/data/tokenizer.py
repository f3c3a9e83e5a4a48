"""Tokenizers: the built-in byte tokenizer, and any Hugging Face `tokenizers` file.

`ByteTokenizer`: ids 0..255 are the UTF-8 bytes of the text; bos, eos and pad follow at
256, 257, 258. A model whose vocabulary stops at 256 still reads and writes any text,
but without those three special tokens (so generation then runs to its length limit).

`HFTokenizer`: a `tokenizer.json` (or a folder holding one, as every hub model ships),
loaded with the `tokenizers` library; bos/eos/pad come from the folder's
tokenizer_config.json when there is one, else from the special tokens' usual names.

Both give `byte_lengths()`, the UTF-8 bytes each id stands for (0 for special tokens),
from which evaluation turns summed nats into bits per byte whatever the tokenizer, and
`digest()`, which a run stores beside its weights to tell one tokenizer from another.

`tokenizer_of(recipe, stored=…)` is the one place a recipe's tokenizer is chosen (the one stored
beside the weights, else task.tokenizer, else model.tokenizer) and checked against the model's
vocabulary (`check_fits`, the one wording of that error); commands reach it through
`Source.tokenizer`, training through the loop, and tasks that read text receive the result when built.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pulse.errors import PulseError

NUM_BYTES = 256
NAMES = ("bytes",)
FILE = "tokenizer.json"


class ByteTokenizer:
    """UTF-8 bytes → ids 0..255, plus bos=256, eos=257, pad=258 when `specials` is true."""

    name = "bytes"

    def __init__(self, *, specials: bool = True):
        self.specials = specials
        self.bos_id = NUM_BYTES if specials else None
        self.eos_id = NUM_BYTES + 1 if specials else None
        self.pad_id = NUM_BYTES + 2 if specials else None
        self.vocab_size = NUM_BYTES + (3 if specials else 0)

    @classmethod
    def for_vocab(cls, vocab_size: int) -> ByteTokenizer:
        """The tokenizer a model with `vocab_size` ids can use: specials only if they fit."""
        tok = cls(specials=vocab_size >= NUM_BYTES + 3)
        check_fits(tok, vocab_size)
        return tok

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if (add_bos or add_eos) and not self.specials:
            raise PulseError("this byte tokenizer has no bos/eos tokens (the model's vocab_size is below 259).")
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """Text of the byte ids; special and out-of-range ids are dropped, broken UTF-8 becomes U+FFFD."""
        if isinstance(ids, Tensor):
            ids = ids.flatten().tolist()
        return bytes(i for i in ids if 0 <= i < NUM_BYTES).decode("utf-8", errors="replace")

    def batch(self, texts: Sequence[str], *, add_bos: bool = False) -> tuple[Tensor, Tensor]:
        """Right-padded ids (b, t) and a mask (b, t), true at real tokens."""
        if not self.specials:
            raise PulseError("padding a batch needs the pad token; use a model with vocab_size ≥ 259.")
        return padded([self.encode(t, add_bos=add_bos) for t in texts], self.pad_id)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def encode_documents(self, docs: Sequence[bytes | str]) -> list[np.ndarray]:
        """Each document's ids (no specials), as arrays: the bytes themselves."""
        return [np.frombuffer(d if isinstance(d, bytes) else d.encode("utf-8"), dtype=np.uint8) for d in docs]

    def byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes per id: 1 for the 256 bytes, 0 for bos/eos/pad."""
        out = np.zeros(self.vocab_size, dtype=np.int64)
        out[:NUM_BYTES] = 1
        return out

    def digest(self) -> str:
        return f"bytes-{self.vocab_size}"

    def save(self, directory: str | Path) -> Path | None:
        """Nothing to store: the byte tokenizer is built in (the model's vocab_size says which)."""
        return None

    def to_hf(self) -> HFTokenizer:
        """The same tokenizer as a `tokenizers` one (byte-level BPE with no merges: id = byte value, then
        <|bos|> <|endoftext|> <|pad|> at 256-258), for tools that read tokenizer.json (a Hugging Face export)."""
        lib = _require_tokenizers()
        vocab = {ch: i for i, ch in enumerate(byte_level_alphabet())}
        tok = lib.Tokenizer(lib.models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = lib.decoders.ByteLevel()
        if self.specials:
            tok.add_special_tokens(["<|bos|>", "<|endoftext|>", "<|pad|>"])
        return HFTokenizer(tok, source="<bytes>")

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size}, specials={self.specials})"


def padded(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Rows of ids right-padded with pad_id into (b, t), and the mask (b, t), true at real tokens."""
    width = max([1, *map(len, rows)])
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


class StreamDecoder:
    """Turns ids into text one at a time, holding back a multi-byte character until it is complete."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        if not 0 <= token_id < NUM_BYTES:
            return ""
        return self._decoder.decode(bytes([token_id]))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError as err:  # a core dependency; only a broken install lacks it
        raise PulseError(f"the `tokenizers` library is missing ({err}); reinstall PULSE: pip install -e .") from None
    return tokenizers


BOS_NAMES = ("<|bos|>", "<|startoftext|>", "<s>", "<bos>", "[CLS]")
EOS_NAMES = ("<|endoftext|>", "<|eos|>", "</s>", "<eos>", "[SEP]")
PAD_NAMES = ("<|pad|>", "<pad>", "[PAD]")


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer: encode, decode, stream-decode, byte lengths, a digest."""

    name = "hf"

    def __init__(self, tokenizer, *, source: str = "<tokenizer>", specials: dict[str, str | None] | None = None):
        self.tokenizer = tokenizer
        self.source = source
        # ids run 0 … vocab_size − 1: the largest id + 1, not the count (a tokenizer.json may number sparsely)
        self.vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        names = specials or {}

        def find(kind: str, candidates: tuple[str, ...]) -> int | None:
            for token in ([names[kind]] if names.get(kind) else list(candidates)):
                i = tokenizer.token_to_id(token)
                if i is not None:
                    return i
            return None

        self.bos_id = find("bos", BOS_NAMES)
        self.eos_id = find("eos", EOS_NAMES)
        self.pad_id = find("pad", PAD_NAMES)
        self.specials = self.eos_id is not None

    @classmethod
    def load(cls, path: str | Path) -> HFTokenizer:
        """A tokenizer.json file, or a folder with one (and optionally tokenizer_config.json)."""
        lib = _require_tokenizers()
        path = Path(path).expanduser()
        file = path / FILE if path.is_dir() else path
        if not file.is_file():
            what = f"{path} has no {FILE}" if path.is_dir() else f"{path}: no such file"
            raise PulseError(f"tokenizer {what}; give task.tokenizer = \"bytes\", a tokenizer.json, or a folder "
                             "holding one (`pulse tokenizer train` writes one).")
        try:
            tokenizer = lib.Tokenizer.from_file(str(file))
        except Exception as err:  # noqa: BLE001 (the library raises its own exception types)
            raise PulseError(f"{file} is not a tokenizer the `tokenizers` library can read ({str(err)[:200]}); give "
                             "a Hugging Face tokenizer.json, or task.tokenizer = \"bytes\".") from None
        return cls(tokenizer, source=str(file), specials=_config_specials(file.parent))

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        for flag, token, what in ((add_bos, self.bos_id, "bos"), (add_eos, self.eos_id, "eos")):
            if flag and token is None:
                raise PulseError(f"the tokenizer {self.source} has no {what} token.")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def encode_documents(self, docs: Sequence[bytes | str]) -> list[np.ndarray]:
        """Each document's ids (no specials), encoded as one batch on all cores by the library."""
        texts = [d.decode("utf-8") if isinstance(d, bytes) else d for d in docs]
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        return [np.asarray(e.ids, dtype=np.int64) for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        if isinstance(ids, Tensor):
            ids = ids.flatten().tolist()
        return self.tokenizer.decode([i for i in ids if 0 <= i < self.vocab_size], skip_special_tokens=True)

    def batch(self, texts: Sequence[str], *, add_bos: bool = False) -> tuple[Tensor, Tensor]:
        """Right-padded ids (b, t) and a mask (b, t), true at real tokens."""
        if self.pad_id is None:
            raise PulseError(f"padding a batch needs a pad token, and the tokenizer {self.source} has none.")
        return padded([self.encode(t, add_bos=add_bos) for t in texts], self.pad_id)

    def stream_decoder(self) -> HFStreamDecoder:
        return HFStreamDecoder(self)

    def special_ids(self) -> set[int]:
        return {i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}

    def byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each id stands for: exact for byte-level BPE (one alphabet character per byte), else the
        bytes of the id decoded alone; 0 for special tokens."""
        alphabet = set(byte_level_alphabet())
        byte_level = "ByteLevel" in json.dumps(json.loads(self.tokenizer.to_str()).get("decoder") or {})
        special = self.special_ids()
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if i in special:
                continue
            token = self.tokenizer.id_to_token(i) or ""
            if byte_level and token and set(token) <= alphabet:
                out[i] = len(token)
            else:
                out[i] = len(self.tokenizer.decode([i]).encode("utf-8"))
        return out

    def digest(self) -> str:
        return "sha256-" + hashlib.sha256(self.tokenizer.to_str().encode("utf-8")).hexdigest()

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json (and the special tokens it uses) into `directory`, atomically."""
        from pulse.paths import atomic_write_text

        directory = Path(directory)
        atomic_write_text(directory / FILE, self.tokenizer.to_str(pretty=True))
        names = {k: self.tokenizer.id_to_token(i) if i is not None else None
                 for k, i in (("bos_token", self.bos_id), ("eos_token", self.eos_id), ("pad_token", self.pad_id))}
        atomic_write_text(directory / CONFIG, json.dumps(names, indent=2, sort_keys=True) + "\n")
        return directory / FILE

    def __repr__(self) -> str:
        return f"HFTokenizer({self.source}, vocab_size={self.vocab_size})"


CONFIG = "tokenizer_config.json"


def _config_specials(folder: Path) -> dict[str, str | None]:
    """bos/eos/pad token names from a tokenizer_config.json beside the tokenizer, if any (a broken one is an error:
    ignoring it would read the tokenizer without the special tokens it names)."""
    path = folder / CONFIG
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PulseError(f"cannot read {path}: {err.strerror or err}.") from None
    except UnicodeDecodeError:
        raise PulseError(f"{path} is not UTF-8 text; write it again, or remove it (it names the tokenizer's "
                         "bos/eos/pad tokens).") from None
    except json.JSONDecodeError as err:
        raise PulseError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); fix it, or "
                         "remove it (it names the tokenizer's bos/eos/pad tokens).") from None
    out = {}
    for kind in ("bos", "eos", "pad"):
        value = config.get(f"{kind}_token") if isinstance(config, dict) else None
        if isinstance(value, dict):  # the hub's AddedToken form
            value = value.get("content")
        out[kind] = value if isinstance(value, str) else None
    return out


class HFStreamDecoder:
    """Text one id at a time, holding back a character until its bytes are complete."""

    def __init__(self, tok: HFTokenizer):
        self.tok = tok
        self.ids: list[int] = []
        self.shown = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    def flush(self) -> str:
        text = self.tok.decode(self.ids)
        piece, self.shown = text[len(self.shown):], text
        return piece


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order (what byte-level BPE tokens are spelt in)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


Tokenizer = ByteTokenizer | HFTokenizer


def tokenizer_of(recipe: Any, *, stored: HFTokenizer | None = None) -> Tokenizer:
    """The tokenizer a recipe's model reads and writes text with: the one place it is chosen. `stored`, the
    tokenizer saved beside the weights, when given; else the one task.tokenizer names; else model.tokenizer.
    "bytes" is the byte tokenizer sized by model.vocab_size (bos/eos/pad from 259 ids on); a name else is a
    tokenizer.json or a folder holding one. Checked against model.vocab_size (`check_fits`)."""
    model = recipe.model
    vocab_size = getattr(model, "vocab_size", None)
    if getattr(model, "kind", None) != "lm" or vocab_size is None:
        raise PulseError(f"a `{getattr(model, 'kind', None)}` model reads no text, so it has no tokenizer; give a "
                         "language model ([model] kind = \"lm\").")
    if stored is not None:
        tok: Tokenizer = stored
    else:
        name = getattr(recipe.task, "tokenizer", None) or model.tokenizer
        tok = ByteTokenizer.for_vocab(vocab_size) if name == "bytes" else HFTokenizer.load(name)
    check_fits(tok, vocab_size)
    return tok


def unsized_tokenizer(task: Any) -> Tokenizer:
    """The tokenizer of a [task] table read with no model known (a task built without one): the file
    task.tokenizer names, or the 256 byte ids without bos/eos/pad (they fit every language model)."""
    name = task.tokenizer
    return ByteTokenizer(specials=False) if name == "bytes" else HFTokenizer.load(name)


def check_fits(tok: Tokenizer, vocab_size: int) -> None:
    """A PulseError, with the vocab_size to set, when a model of `vocab_size` ids cannot take the tokenizer's ids
    (the one wording of this error)."""
    if tok.vocab_size <= vocab_size:
        return
    if isinstance(tok, ByteTokenizer):
        what, want = f'the tokenizer "bytes" ({NUM_BYTES} ids; {NUM_BYTES + 3} with bos/eos/pad)', NUM_BYTES + 3
    else:
        what, want = f"the tokenizer {tok.source} ({tok.vocab_size} ids)", tok.vocab_size
    raise PulseError(f"model.vocab_size = {vocab_size} cannot hold the ids of {what}; set model.vocab_size = "
                     f"{want}.")


def stored_tokenizer(folder: str | Path, metadata: dict[str, str]) -> HFTokenizer | None:
    """The tokenizer.json saved beside a checkpoint's weights (None if there is none), checked against the
    digest its weights recorded."""
    file = Path(folder) / FILE
    if not file.is_file():
        if metadata.get("pulse_tokenizer", "bytes").startswith("sha256-"):
            raise PulseError(f"{folder}: its weights were saved with a tokenizer file ({FILE}), which is missing; "
                             "restore it from the run that wrote them.")
        return None
    tok = HFTokenizer.load(file)
    recorded = metadata.get("pulse_tokenizer")
    if recorded is not None and recorded != tok.digest():
        raise PulseError(f"{file} is not the tokenizer these weights were saved with (its digest differs from the "
                         "one in their metadata); restore the original file.")
    return tok


def reset_token(task: Any, tokenizer: Any) -> int | None:
    """The token where a model trained on `task` starts every layer afresh: the tokenizer's eos when
    the task packs documents with reset_at_eos (the text task), else None."""
    if getattr(task, "reset_at_eos", False) and getattr(tokenizer, "eos_id", None) is not None:
        return int(tokenizer.eos_id)
    return None
