"""Registrations of the other sequence mixers: kind ↔ spec ↔ module."""

from __future__ import annotations

from pulse.blocks.mixers.linear_attention import LinearAttention
from pulse.blocks.mixers.ntm import NTMMemory
from pulse.blocks.mixers.sparse_state_attention import SparseStateAttention
from pulse.blocks.mixers.ssm import SelectiveSSM
from pulse.registry import register
from pulse.specs import mixers as s

register("linear_attention", role="mixer", spec=s.LinearAttentionSpec, module=LinearAttention)
register("sparse_state_attention", role="mixer", spec=s.SparseStateAttentionSpec, module=SparseStateAttention)
register("ssm", role="mixer", spec=s.SSMSpec, module=SelectiveSSM)
register("ntm", role="mixer", spec=s.NTMSpec, module=NTMMemory)
