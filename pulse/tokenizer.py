"""The built-in byte-level tokenizer: any text, no download, no vocabulary file.

Ids 0..255 are the UTF-8 bytes of the text; bos, eos and pad follow at 256, 257,
258. A model whose vocabulary stops at 256 still reads and writes any text, but
without those three special tokens (so generation then runs to its length limit).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from pulse.errors import PulseError

NUM_BYTES = 256
NAMES = ("bytes",)


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
        if vocab_size < NUM_BYTES:
            raise PulseError(
                f"model.vocab_size is {vocab_size}, but byte-level text needs at least {NUM_BYTES} ids "
                f"({NUM_BYTES + 3} with bos/eos/pad); set model.vocab_size = {NUM_BYTES + 3}."
            )
        return cls(specials=vocab_size >= NUM_BYTES + 3)

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
        rows = [self.encode(t, add_bos=add_bos) for t in texts]
        width = max([1, *map(len, rows)])
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size}, specials={self.specials})"


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


def tokenizer_for(name: str, vocab_size: int) -> ByteTokenizer:
    """The tokenizer a recipe names (`model.tokenizer`), checked against its vocabulary."""
    if name != "bytes":
        raise PulseError(f"unknown tokenizer `{name}`; built-in tokenizers: {', '.join(NAMES)}.")
    return ByteTokenizer.for_vocab(vocab_size)
