"""Registrations of the rest of the block zoo: kind ↔ spec ↔ builder."""

from __future__ import annotations

from pulse.blocks.mixers.linear_attention import LinearAttention
from pulse.blocks.mixers.ntm import NTMMemory
from pulse.blocks.mixers.sparse_state_attention import SparseStateAttention
from pulse.blocks.mixers.ssm import SelectiveSSM
from pulse.assemble.context import BuildContext
from pulse.registry import register
from pulse.specs import mixers as s


def _linear_attention(spec: s.LinearAttentionSpec, ctx: BuildContext) -> LinearAttention:
    return LinearAttention(
        ctx.dim, num_heads=spec.num_heads, feature_map=spec.feature_map, normalize=spec.normalize,
        decay=spec.decay, chunk_size=spec.chunk_size, **ctx.factory(),
    )


def _sparse_state_attention(spec: s.SparseStateAttentionSpec, ctx: BuildContext) -> SparseStateAttention:
    return SparseStateAttention(
        ctx.dim, num_states=spec.num_states, top_k=spec.top_k, num_heads=spec.num_heads,
        chunk_size=spec.chunk_size, conv_size=spec.conv_size, **ctx.factory(),
    )


def _ssm(spec: s.SSMSpec, ctx: BuildContext) -> SelectiveSSM:
    return SelectiveSSM(
        ctx.dim, d_state=spec.d_state, expand=spec.expand, conv_size=spec.conv_size, dt_rank=spec.dt_rank,
        dt_min=spec.dt_min, dt_max=spec.dt_max, chunk_size=spec.chunk_size, **ctx.factory(),
    )


def _ntm(spec: s.NTMSpec, ctx: BuildContext) -> NTMMemory:
    return NTMMemory(
        ctx.dim, memory_slots=spec.memory_slots, memory_width=spec.memory_width, read_heads=spec.read_heads,
        write_heads=spec.write_heads, controller_size=spec.controller_size, memory_init=spec.memory_init,
        **ctx.factory(),
    )


register("linear_attention", role="mixer", spec=s.LinearAttentionSpec, builder=_linear_attention)
register("sparse_state_attention", role="mixer", spec=s.SparseStateAttentionSpec, builder=_sparse_state_attention)
register("ssm", role="mixer", spec=s.SSMSpec, builder=_ssm)
register("ntm", role="mixer", spec=s.NTMSpec, builder=_ntm)
