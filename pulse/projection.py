"""What one forward costs, projected from the model's own cost formulas before anything runs.

The projection reads only the block contract (`flops_per_token(n)`, `state_numel(n)` of every
costed block, pulse.summarize.block_costs) and the shape of the forward, never a mixer's kind:

- activations: a block's work at length 1 is its projections, about 2·d FLOPs per number it
  writes, so flops_per_token(1) / 2d numbers per token; a forward without gradients frees a
  block's before the next starts, so only the largest block counts, over the residual stream;
- context: the work that grows with n, flops_per_token(n) − flops_per_token(1), reads the context
  from each query (attention's scores): it is done for `QUERY_BLOCK` queries at a time, each
  holding that many numbers per 2·d FLOPs;
- the recurrent state each block returns at n (attention: its KV cache), kept for all of them;
- logits where the evaluation scores every position (b × n × vocab, and the loss's log-softmax);
- the token ids, and any rows of ids built in Python first (`host_tokens`).

Evaluation (pulse.evaluation.cost: will this length fit, how long will it take) and the speed
benchmark's guard (pulse.bench.plan: is this length worth a process) both ask here.

# b batch · n length · d model · v vocab
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pulse.summarize import BlockCost, block_costs
from pulse.units import fmt_bytes

QUERY_BLOCK = 512  # queries whose context work is live at once (attention's blocks of queries)
RESIDUAL = 4  # (b, n, d) tensors alive beside a block: the stream, its norm, the block's output, their sum
SCRATCH = 3  # a block's activations, as a multiple of the numbers its projections write (copies, reshapes)
LOGITS = 2  # (b, n, v) tensors of a scored forward: the logits and the loss's log-softmax
IDS = 3  # int64 (b, n) tensors of ids: the window, the inputs, the labels


@dataclass
class Cost:
    """One forward of `batch` × `length` tokens: projected peak memory above the loaded model, and FLOPs."""

    length: int
    batch: int
    memory_bytes: float
    flops: float
    parts: dict[str, float]  # memory by what holds it, for the message

    def describe(self) -> str:
        shown = ", ".join(f"{name} {fmt_bytes(int(value))}" for name, value in self.parts.items() if value >= 1)
        return f"{fmt_bytes(int(self.memory_bytes))} ({shown})"


def model_dim(model: nn.Module) -> int:
    """The width of the residual stream (a mixer's or a model's `dim`, else its embedding's)."""
    dim = getattr(model, "dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    embed = getattr(model, "embed", None)
    return int(getattr(embed, "embedding_dim", 1) or 1)


def cost(model: nn.Module, length: int, *, batch: int = 1, logits: bool = True, host_tokens: int = 0) -> Cost:
    """The projected cost of one no-gradient forward of `model` over (batch, length) token ids.

    `logits`: the evaluation scores every position (False: only a few, as the passkey's answer);
    `host_tokens`: ids the evaluation holds in Python lists besides (8 bytes each)."""
    param = next(model.parameters(), None)
    size = (param.dtype if param is not None else torch.float32).itemsize
    d, vocab = model_dim(model), int(getattr(model, "vocab_size", 0) or 0)
    at_n = block_costs(model, seq_len=length, batch=batch)
    at_1 = {row.name: row for row in block_costs(model, seq_len=1, batch=batch)}
    tokens = batch * length
    widest = 0.0
    for row in at_n:
        if _is_block(row):
            own = at_1[row.name].flops_per_token / (2 * d)  # numbers written per token
            context = max(row.flops_per_token - at_1[row.name].flops_per_token, 0.0) / (2 * d)  # per query
            widest = max(widest, SCRATCH * own * tokens + context * batch * min(length, QUERY_BLOCK))
    parts = {
        "activations": (RESIDUAL * d * tokens + widest) * size,
        "state": float(sum(row.state_bytes for row in at_n)),
        "logits": LOGITS * tokens * vocab * 4.0 if logits else 0.0,
        "token ids": IDS * tokens * 8.0 + host_tokens * 8.0,
    }
    flops = tokens * sum(row.flops_per_token for row in at_n if logits or _is_block(row))
    return Cost(length, batch, sum(parts.values()), flops, parts)


def _is_block(row: BlockCost) -> bool:
    """A costed block of the stack (the head and the embedding are counted as logits and the stream)."""
    return row.type not in ("Embedding", "Linear") and row.flops_per_token > 0


def work(model: nn.Module, length: int) -> float:
    """FLOPs of one forward over `length` tokens (batch 1): length × the costed blocks' flops_per_token(length)
    — how the work of a length compares with another's, by the model's own formulas."""
    return float(length) * sum(row.flops_per_token for row in block_costs(model, seq_len=length) if _is_block(row))
