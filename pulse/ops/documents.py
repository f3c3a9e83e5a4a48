"""Document boundaries inside a window: where the state starts fresh, in the forms the mixers need.

Packed text puts several documents in one window. `doc_starts` marks the positions where a new
document begins: there every mixer's state is reset to its initial state, so the output at each
position equals that of its document run alone, from the initial state, and the state after the
window equals the state of the last document alone. It is given as

- a (batch, time) bool tensor, True where a document starts (what the models compute from ids), or
- one 1-D integer tensor (or list of ints) per batch row: the sorted start positions in 0..time−1.

`starts_mask` checks either and returns the bool form; `step_mask` does the same for the one token
of `step` ((batch,) bool). The chunked forms reset their carry inside the chunk math with
`chunk_masks`; the causal convolutions mask their taps with `since_start`; mixers whose chunk grid
or memory cannot be cut inside a call run each document by itself (`per_document`), and keep
rows that end at different chunk phases as `RowStates`.

# b batch · t time · n chunks · c chunk length
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from pulse.errors import PulseError

DocStarts = Tensor | Sequence[Tensor | Sequence[int]] | None

NO_START = 1 << 40  # `since_start` where no document starts in the window at or before a position


def starts_mask(doc_starts: DocStarts, batch: int, time: int, device: torch.device, who: str = "the mixer"
                ) -> Tensor | None:
    """The (b, t) bool mask of document starts, or None when there are none to honour."""
    if doc_starts is None:
        return None
    if isinstance(doc_starts, Tensor):
        if doc_starts.dtype != torch.bool or tuple(doc_starts.shape) != (batch, time):
            raise PulseError(
                f"doc_starts given to {who} as a tensor must be a ({batch}, {time}) bool mask (True where a "
                f"document starts), got {tuple(doc_starts.shape)} {doc_starts.dtype}; or give one 1-D integer "
                "tensor of start positions per batch row."
            )
        return doc_starts.to(device)
    if not isinstance(doc_starts, Sequence) or isinstance(doc_starts, (str, bytes)) or len(doc_starts) != batch:
        got = f"{len(doc_starts)} entries" if isinstance(doc_starts, Sequence) else type(doc_starts).__name__
        raise PulseError(
            f"doc_starts given to {who} must hold one 1-D integer tensor of start positions per batch row "
            f"({batch} rows), got {got}."
        )
    mask = torch.zeros(batch, time, dtype=torch.bool)
    for row, starts in enumerate(doc_starts):
        pos = starts if isinstance(starts, Tensor) else torch.as_tensor(list(starts), dtype=torch.long)
        if pos.ndim != 1 or (pos.numel() and (pos.is_floating_point() or pos.dtype == torch.bool)):
            raise PulseError(
                f"doc_starts[{row}] given to {who} must be a 1-D integer tensor of positions, got "
                f"{tuple(pos.shape)} {pos.dtype}."
            )
        pos = pos.long().cpu()
        if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= time):
            raise PulseError(
                f"doc_starts[{row}] given to {who} holds {pos.tolist()}, outside the window's positions "
                f"0..{time - 1}; give starts inside the window."
            )
        if pos.numel() > 1 and not bool((pos[1:] > pos[:-1]).all()):
            raise PulseError(
                f"doc_starts[{row}] given to {who} must be sorted and without repeats, got {pos.tolist()}."
            )
        mask[row, pos] = True
    return mask.to(device)


def step_mask(doc_starts: Tensor | None, batch: int, device: torch.device, who: str = "the mixer") -> Tensor | None:
    """For `step`: (b,) bool, True for the rows whose new token starts a document; None for none."""
    if doc_starts is None:
        return None
    if not isinstance(doc_starts, Tensor) or doc_starts.dtype != torch.bool or tuple(doc_starts.shape) != (batch,):
        shape = tuple(doc_starts.shape) if isinstance(doc_starts, Tensor) else type(doc_starts).__name__
        raise PulseError(
            f"doc_starts given to {who}.step must be a ({batch},) bool tensor, True for the rows whose token "
            f"starts a new document; got {shape}."
        )
    return doc_starts.to(device)


def since_start(mask: Tensor) -> Tensor:
    """(b, t) long: how many tokens each position lies after the latest document start at or before it
    (0 at a start); NO_START + position where no start precedes it in the window."""
    t = mask.shape[1]
    pos = torch.arange(t, device=mask.device).expand_as(mask)
    last = torch.where(mask, pos, torch.full_like(pos, -NO_START)).cummax(dim=1).values
    return pos - last


def first_keys(resets: Tensor | None, start: Tensor | None, b: int, n: int, t: int, device) -> Tensor:
    """(b, t) long: the first key index (over n cached + t new keys) each new query may see — its
    document's start: a start in this window (`resets`, (b, t) bool), else the one recorded before
    (`start`, (b,)), else 0. What attention and forgetting attention read their KV caches from."""
    before = torch.zeros(b, dtype=torch.long, device=device) if start is None else start.to(device)
    if resets is None:
        return before.unsqueeze(1).expand(b, t)
    since = since_start(resets)
    pos = n + torch.arange(t, device=device)
    return torch.where(since < NO_START, pos - since, before.unsqueeze(1))


def chunk_masks(mask: Tensor, n: int, c: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What the chunked forms need to reset their carry inside the chunk math, from the (b, t) mask
    padded to n·c positions (padding starts nothing). With seg_i the number of starts in the chunk
    up to i: same (b, 1, n, c, c) — i and j lie in one document; visible (b, 1, n, c) — i still
    sees the state the chunk started from; last (b, 1, n, c) — i lies in the chunk's last
    document, which the chunk-end state holds; kept (b, 1, n) — the chunk-start state survives
    the chunk (no start in it). Every tensor is float, a factor for the products."""
    b, t = mask.shape
    if n * c > t:
        mask = torch.nn.functional.pad(mask, (0, n * c - t))
    seg = mask.view(b, 1, n, c).long().cumsum(dim=-1)
    same = (seg.unsqueeze(-1) == seg.unsqueeze(-2))
    return same, seg == 0, seg == seg[..., -1:], seg[..., -1] == 0


class RowStates(list):
    """The state of a batch whose rows cannot share one batched state (a chunk-recurrent mixer's rows
    ending their last documents at different chunk phases): one state per row, each for batch 1.
    Pass it back as the state; the mixer continues every row exactly."""


def split_rows(state: Any, batch: int) -> list[Any]:
    """One state per row (batch 1 each) from a batched state, RowStates, or None (fresh rows)."""
    if state is None:
        return [None] * batch
    if isinstance(state, RowStates):
        if len(state) != batch:
            raise PulseError(
                f"the state holds {len(state)} rows but the input has {batch}; pass the state it returned."
            )
        return list(state)
    return [_index(state, row, batch) for row in range(batch)]


def merge_rows(states: list[Any]) -> Any:
    """One batched state from per-row states when they line up (same structure, same non-batch sizes
    and counters), else RowStates."""
    try:
        return _cat(states)
    except _Mismatch:
        return RowStates(states)


class _Mismatch(Exception):
    pass


def _index(tree: Any, row: int, batch: int) -> Any:
    if isinstance(tree, Tensor):
        return tree[row : row + 1] if tree.ndim and tree.shape[0] == batch else tree
    if isinstance(tree, dict):
        return {k: _index(v, row, batch) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_index(v, row, batch) for v in tree)
    return tree


def _cat(trees: list[Any]) -> Any:
    first = trees[0]
    if isinstance(first, Tensor):
        if not all(isinstance(t, Tensor) and t.shape[1:] == first.shape[1:] for t in trees):
            raise _Mismatch
        return torch.cat(trees, dim=0) if first.ndim else first
    if isinstance(first, dict):
        if not all(isinstance(t, dict) and t.keys() == first.keys() for t in trees):
            raise _Mismatch
        return {k: _cat([t[k] for t in trees]) for k in first}
    if isinstance(first, (list, tuple)):
        if not all(type(t) is type(first) and len(t) == len(first) for t in trees):
            raise _Mismatch
        return type(first)(_cat(list(parts)) for parts in zip(*trees))
    if not all(t == first for t in trees):
        raise _Mismatch
    return first


def per_document(forward: Callable[[Tensor, Any], tuple[Tensor, Any]], x: Tensor, state: Any,
                 mask: Tensor | None) -> tuple[Tensor, Any]:
    """forward(x, state) with the state started fresh at every document start: each row's documents
    run one after another (the first continuing the row's state, the others from None, i.e. the
    initial state). For mixers whose state cannot be reset inside one call."""
    b, t, _ = x.shape
    rows = split_rows(state, b)
    starts = [[] for _ in range(b)] if mask is None else [row.nonzero().flatten().tolist() for row in mask.cpu()]
    outs, finals = [], []
    for row, (row_state, row_starts) in enumerate(zip(rows, starts)):
        bounds = sorted({0, *row_starts, t})
        pieces = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            y, row_state = forward(x[row : row + 1, lo:hi], None if lo in row_starts else row_state)
            pieces.append(y)
        outs.append(torch.cat(pieces, dim=1))
        finals.append(row_state)
    return torch.cat(outs, dim=0), merge_rows(finals)


def reset_rows(state: Any, fresh: Any, rows: Tensor) -> Any:
    """`state` with the rows where `rows` (b,) is True replaced by `fresh` (an init_state of the same
    batch): for `step` in mixers whose state is fixed-size tensors with the batch first."""
    if isinstance(state, Tensor):
        return torch.where(rows.view(-1, *(1,) * (state.ndim - 1)), fresh, state)
    if isinstance(state, dict):
        return {k: reset_rows(v, fresh[k], rows) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(reset_rows(v, f, rows) for v, f in zip(state, fresh))
    return state
