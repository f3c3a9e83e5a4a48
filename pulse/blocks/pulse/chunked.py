"""The chunk-recurrent token side every PULSE slot mixer shares: chunked reads of a slot bank.

# b batch · t time · n chunks · c chunk size · d model · k slot dim · s slots · h heads · e head dim
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts, RowStates, per_document, starts_mask, step_mask

Local = Literal["attention", "conv"]
LOCALS: tuple[str, ...] = ("attention", "conv")


class ChunkRecurrentMixer(nn.Module, ABC):
    """The token side every chunk-recurrent slot mixer shares.

    The sequence is cut into chunks of c tokens. Token t of chunk j reads, in one softmax per
    head, the slots as they stood after chunk j−1 and (local = "attention") the tokens of its own
    chunk up to t; with local = "conv" it reads the slots only and adds a causal depthwise
    convolution of the token values that runs across chunk boundaries. The state holds the
    slots, the keys/values of the current partial chunk and the convolution's last inputs, so
    forward, split forwards and `step` agree exactly. A document start (`doc_starts`) begins a new
    chunk grid, as the document alone would: each document then runs by itself
    (`pulse.ops.documents.per_document`), and rows that end at different chunk phases are kept as
    `RowStates`. Subclasses say how the slots evolve:
    `_token_streams` (per-token tensors a completed chunk needs, at least "k" and "v"),
    `_init_slots` and `_advance` (the slots after each chunk completed here).

    `capture_sink`, when set (by pulse.visualization.capture), is called as sink(name, tensor)
    with what the layer computed: "slots" (b, n, s, k) the slots each chunk read, "read" (b, h, t, s)
    each token's attention on the slots. Unset (the default) it costs one attribute test.
    """

    capture_sink: Callable[[str, Tensor], None] | None = None

    def __init__(
        self,
        dim: int,
        *,
        slot_dim: int | None,
        num_heads: int,
        chunk_size: int,
        local: Local,
        conv_size: int,
        device=None,
        dtype=None,
    ):
        super().__init__()
        slot_dim = slot_dim or dim
        if chunk_size < 1:
            raise PulseError(f"chunk_size must be ≥ 1, got {chunk_size}.")
        if local not in LOCALS:
            raise PulseError(f"unknown local path `{local}`; choose one of {', '.join(LOCALS)}.")
        if slot_dim % num_heads:
            raise PulseError(
                f"num_heads ({num_heads}) must divide slot_dim ({slot_dim}); pick a divisor of {slot_dim}."
            )
        if conv_size < 1:
            raise PulseError(f"conv_size must be ≥ 1, got {conv_size}.")
        self.dim, self.slot_dim, self.num_heads, self.head_dim = dim, slot_dim, num_heads, slot_dim // num_heads
        self.chunk_size, self.local = chunk_size, local
        self.conv_size = conv_size if local == "conv" else 0
        self.query = nn.Linear(dim, slot_dim, bias=False, device=device, dtype=dtype)
        self.slot_kv = nn.Linear(slot_dim, 2 * slot_dim, bias=False, device=device, dtype=dtype)
        self.out = nn.Linear(slot_dim, dim, bias=False, device=device, dtype=dtype)
        if local == "conv":
            self.conv = nn.Parameter(torch.empty(slot_dim, conv_size, device=device, dtype=dtype))
            bound = 1.0 / math.sqrt(conv_size)
            nn.init.uniform_(self.conv, -bound, bound)

    @abstractmethod
    def _token_streams(self, x: Tensor) -> dict[str, Tensor]:
        """Per-token tensors (b, t, ·) that a completed chunk needs; "k" and "v" are also the local keys/values."""

    @abstractmethod
    def _init_slots(self, batch: int, device, dtype) -> dict[str, Any]:
        """The slot part of a fresh state."""

    @abstractmethod
    def _advance(
        self, slots: dict[str, Any], chunks: dict[str, Tensor], num_read: int
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """Write the completed chunks (b, n, c, ·) into the slots. Returns what chunks 0..num_read−1 read,
        (b, num_read, s, k) — chunk j reads the slots after j of these chunks — an optional read
        bias (b, num_read, s), and the slot state after all n chunks."""

    def _check_slots(self, slots: dict[str, Any], batch: int) -> None:
        """Raise PulseError when a state does not fit the layer as it is now."""

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        device = device if device is not None else self.query.weight.device
        dtype = dtype if dtype is not None else self.query.weight.dtype
        state: dict[str, Any] = {"slots": self._init_slots(batch, device, dtype), "buffer": {}}
        if self.conv_size > 1:
            state["conv"] = torch.zeros(batch, self.conv_size - 1, self.slot_dim, device=device, dtype=dtype)
        return state

    def forward(self, x: Tensor, state: dict[str, Any] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Any]]:
        check_input(self, x)
        if state is None and doc_starts is None and torch.compiler.is_exporting():
            return self._forward_export(x), {}
        resets = starts_mask(doc_starts, x.shape[0], x.shape[1], x.device, type(self).__name__)
        if isinstance(state, RowStates) or (resets is not None and bool(resets.any())):
            # a document starts its own chunk grid, so each runs by itself (pulse.ops.documents)
            return per_document(self._forward, x, state, resets)
        return self._forward(x, state)

    def _forward(self, x: Tensor, state: dict[str, Any] | None) -> tuple[Tensor, dict[str, Any]]:
        b, t, _ = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        if not isinstance(state, dict) or "slots" not in state or "buffer" not in state:
            raise PulseError(
                f"{type(self).__name__} got a state it did not make; pass the state its forward or init_state returned."
            )
        self._check_slots(state["slots"], b)
        c = self.chunk_size
        streams = self._token_streams(x)  # each (b, t, ·)
        buffer = state["buffer"]
        offset = buffer["k"].shape[1] if buffer else 0
        full = {name: torch.cat((buffer[name], s), dim=1) if buffer else s for name, s in streams.items()}
        n = offset + t
        done = n // c
        chunks = {name: s[:, : done * c].unflatten(1, (done, c)) for name, s in full.items()}  # (b, n_done, c, ·)
        views, bias, slots = self._advance(state["slots"], chunks, -(-n // c))
        if self.capture_sink is not None:
            self.capture_sink("slots", views.detach())
        y = self._read(self.query(x), full["k"], full["v"], views, bias, offset)
        new: dict[str, Any] = {"slots": slots, "buffer": {}}
        if n > done * c:
            # cloned so the state does not pin the whole sequence's keys and values
            new["buffer"] = {name: s[:, done * c :].clone() for name, s in full.items()}
        if self.local == "conv":
            y_conv, history = self._conv(streams["v"], state.get("conv"))
            y = y + y_conv
            if history is not None:
                new["conv"] = history
        return self.out(y), new

    def _forward_export(self, x: Tensor) -> Tensor:
        """The full-sequence forward from a fresh state with no Python branch on the length, for
        torch.export: the sequence is padded to whole chunks by repeating its last token (padding
        comes after every real token, so causality keeps it out of their outputs), all chunks are
        written (the last write is never read) and read side by side. The state is not returned."""
        b, t, _ = x.shape
        c = self.chunk_size
        n = (t + c - 1) // c
        x = x.index_select(1, torch.arange(n * c, device=x.device).clamp(max=t - 1))  # (b, n c, d)
        streams = self._token_streams(x)
        chunks = {name: z.reshape(b, n, c, z.shape[-1]) for name, z in streams.items()}  # (b, n, c, ·)
        state = self.init_state(b, device=x.device, dtype=x.dtype)
        views, bias, _ = self._advance(state["slots"], chunks, n)
        y = self._read(self.query(x), streams["k"], streams["v"], views, bias, 0, whole=True)
        if self.local == "conv":
            y = y + self._conv(streams["v"], state.get("conv"))[0]
        return self.out(y)[:, :t]

    def step(self, x_t: Tensor, state: dict[str, Any], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        check_input(self, x_t, ndim=2)
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        y, state = self.forward(x_t.unsqueeze(1), state, doc_starts=None if rows is None else rows.unsqueeze(1))
        return y.squeeze(1), state

    def _read(self, q: Tensor, k: Tensor, v: Tensor, views: Tensor, bias: Tensor | None, offset: int,
              whole: bool = False) -> Tensor:
        """Token outputs (b, t, k) from queries q (b, t, k) of the new tokens, keys/values k, v
        (b, offset + t, k) from the start of the first open chunk, slots views (b, n, s, k)
        (chunk j reads views[:, j]) and an optional logit bias (b, n, s) on the slots.
        whole: t = n·c tokens in whole chunks, read side by side whatever n is."""
        b, t, _ = q.shape
        c, h, e = self.chunk_size, self.num_heads, self.head_dim
        n, s = views.shape[1], views.shape[2]
        if n == 1 and not whole:
            # one open chunk (always so in `step`): only the new tokens ask, keys start at the chunk
            rows, cols, diagonal, pad = t, offset + t, offset, 0
        else:
            # whole chunks side by side: the first `offset` queries belong to tokens answered by an
            # earlier call and the last `pad` to no token; both are zeros, dropped below
            rows, cols, diagonal, pad = c, c, 0, n * c - offset - t
            if offset or pad:
                q = F.pad(q, (0, 0, offset, pad))
        q = q.reshape(b * n, rows, h, e).transpose(1, 2)  # (b n, h, rows, e)
        sk, sv = (z.reshape(b * n, s, h, e).transpose(1, 2) for z in self.slot_kv(views).chunk(2, dim=-1))
        if self.local == "attention":
            tk, tv = (
                (F.pad(z, (0, 0, 0, pad)) if pad else z).reshape(b * n, cols, h, e).transpose(1, 2) for z in (k, v)
            )
            keys, values = torch.cat((sk, tk), dim=2), torch.cat((sv, tv), dim=2)  # (b n, h, s + cols, e)
            causal = torch.ones(rows, cols, dtype=torch.bool, device=q.device).tril(diagonal=diagonal)
            if bias is None:
                mask = torch.cat((torch.ones(rows, s, dtype=torch.bool, device=q.device), causal), dim=1)
            else:
                tokens = torch.zeros(rows, cols, dtype=q.dtype, device=q.device).masked_fill(~causal, float("-inf"))
                mask = torch.cat(
                    (bias.reshape(b * n, 1, 1, s).expand(-1, 1, rows, s), tokens.expand(b * n, 1, rows, cols)), dim=-1
                )
        else:
            keys, values = sk, sv
            mask = None if bias is None else bias.reshape(b * n, 1, 1, s)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (b n, h, rows, e)
        if self.capture_sink is not None:
            self._capture_read(q, keys, mask, b, s, offset, t)
        y = y.transpose(1, 2)  # (b n, rows, h, e)
        # an explicit copy for export: the traced SDPA output's strides can differ from those of its
        # decomposition, so a reshape traced as a view would be invalid in the exported graph
        y = (y.clone(memory_format=torch.contiguous_format) if whole else y).reshape(b, n * rows, self.slot_dim)
        return y if n == 1 and not whole else y[:, offset : offset + t]

    def _capture_read(self, q: Tensor, keys: Tensor, mask: Tensor | None, b: int, s: int, offset: int, t: int) -> None:
        """Record each new token's attention on the slots, (b, h, t, s): the softmax SDPA computed, made explicit."""
        scores = q @ keys.transpose(-1, -2) / math.sqrt(self.head_dim)  # (b n, h, rows, s + cols)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        on_slots = torch.softmax(scores, dim=-1)[..., :s]  # (b n, h, rows, s)
        on_slots = on_slots.unflatten(0, (b, -1)).transpose(1, 2).flatten(2, 3)  # (b, h, n rows, s)
        rows = on_slots.shape[2]
        self.capture_sink("read", on_slots[:, :, offset : offset + t] if rows > t else on_slots)

    def _conv(self, v: Tensor, history: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Causal depthwise convolution of v (b, t, k) continuing from the previous K−1 values."""
        kernel = self.conv_size
        x = v if history is None else torch.cat((history, v), dim=1)  # (b, K−1+t, k)
        y = F.conv1d(x.transpose(1, 2), self.conv.unsqueeze(1), groups=self.slot_dim).transpose(1, 2)
        return y, (x[:, x.shape[1] - (kernel - 1) :].clone() if kernel > 1 else None)

    def _token_flops(self, seq_len: int, num_slots: int) -> float:
        """Forward FLOPs per token of the token side: projections, the read, the local path."""
        d, k, c = self.dim, self.slot_dim, self.chunk_size
        keys = num_slots + ((min(c, seq_len) + 1) / 2 if self.local == "attention" else 0)
        return 8.0 * d * k + 4.0 * k * keys + 2.0 * k * self.conv_size

    def _token_state(self, seq_len: int, per_token: int) -> int:
        """State numbers of the partial chunk buffer and the convolution history."""
        return (seq_len % self.chunk_size) * per_token + max(self.conv_size - 1, 0) * self.slot_dim

    def _token_params(self) -> int:
        return 2 * self.dim * self.slot_dim + 2 * self.slot_dim**2 + self.slot_dim * self.conv_size
