"""The PULSE layer's per-token reference: the plain loop the chunked fast path is tested against."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pulse.blocks.pulse.pulse_layer import PulseLayer


def reference_forward(layer: PulseLayer, x: Tensor) -> Tensor:
    """PulseLayer.forward(x)[0] from a fresh state, one token at a time, written plainly (the test oracle)."""
    b, t, _ = x.shape
    c, h, e, s = layer.chunk_size, layer.num_heads, layer.head_dim, layer.num_slots
    init, read_bias = layer.bank()
    slots = init.unsqueeze(0).expand(b, -1, -1)
    cell = torch.zeros_like(slots)
    alloc = layer.allocator
    stat_sum = torch.zeros(b, 2 * alloc.features, dtype=x.dtype) if alloc is not None else None
    count = 0
    history = [torch.zeros(b, layer.slot_dim, dtype=x.dtype)] * max(layer.conv_size - 1, 0)
    chunk: list[Tensor] = []
    outputs = []
    for i in range(t):
        if not chunk:
            view = layer.propagator.communicate(slots) if layer.gate == "mingru" else slots
            slot_bias = torch.zeros(b, s, dtype=x.dtype)
            mask = None
            if read_bias is not None:
                slot_bias = slot_bias + read_bias
            if alloc is not None:
                budget = alloc.budget(stat_sum / max(count, 1))
                mask, log_mask = alloc.masks(budget)
                slot_bias = slot_bias + log_mask
        chunk.append(x[:, i])
        q = layer.query(x[:, i]).view(b, h, e)
        keys, values = layer.slot_kv(view).chunk(2, dim=-1)  # (b, s, k)
        bias = slot_bias
        if layer.local == "attention":
            tk, tv = layer.router.project_tokens(torch.stack(chunk, dim=1))
            keys, values = torch.cat((keys, tk), dim=1), torch.cat((values, tv), dim=1)
            bias = torch.cat((slot_bias, torch.zeros(b, len(chunk), dtype=x.dtype)), dim=1)
        keys, values = keys.view(b, -1, h, e), values.view(b, -1, h, e)
        weights = torch.softmax(torch.einsum("bhe,bnhe->bhn", q, keys) / math.sqrt(e) + bias.unsqueeze(1), dim=-1)
        mixed = torch.einsum("bhn,bnhe->bhe", weights, values).reshape(b, -1)
        if layer.local == "conv":
            history.append(layer.router.project_tokens(x[:, i])[1])
            taps = history[len(history) - layer.conv_size :]
            mixed = mixed + sum(layer.conv[:, j] * taps[j] for j in range(layer.conv_size))
        outputs.append(layer.out(mixed))
        if len(chunk) == c:
            tokens = torch.stack(chunk, dim=1)
            queries = init.unsqueeze(0).expand(b, -1, -1) if layer.gate == "mingru" else slots
            u = layer.router(queries, tokens)
            if layer.gate == "lstm":
                new, new_cell = layer.propagator.update((slots, cell), u)
            else:
                new, new_cell = layer.propagator.update(slots, u), cell
            if layer.gate != "mingru":
                new = layer.propagator.communicate(new)
            if mask is not None:
                new = slots + mask.unsqueeze(-1) * (new - slots)
                new_cell = cell + mask.unsqueeze(-1) * (new_cell - cell)
            slots, cell = new, new_cell
            if alloc is not None:
                stat_sum = stat_sum + alloc.chunk_stats(alloc.token_features(tokens).unsqueeze(1)).squeeze(1)
                count += 1
            chunk = []
    return torch.stack(outputs, dim=1)
