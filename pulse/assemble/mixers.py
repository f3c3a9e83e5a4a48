"""Registrations of the other sequence mixers: kind ↔ spec ↔ module."""

from __future__ import annotations

from pulse.blocks.mixers.deltanet import DeltaNet, GatedDeltaNet
from pulse.blocks.mixers.deltaproduct import GatedDeltaProduct
from pulse.blocks.mixers.forgetting_attention import ForgettingAttention
from pulse.blocks.mixers.gated_deltanet2 import GatedDeltaNet2
from pulse.blocks.mixers.kda import KimiDeltaAttention
from pulse.blocks.mixers.linear_attention import LinearAttention
from pulse.blocks.mixers.mamba2 import Mamba2
from pulse.blocks.mixers.mlstm import MLSTM
from pulse.blocks.mixers.ntm import NTMMemory
from pulse.blocks.mixers.rglru import RGLRU
from pulse.blocks.mixers.rwkv7 import RWKV7
from pulse.blocks.mixers.sparse_state_attention import SparseStateAttention
from pulse.blocks.mixers.ssm import SelectiveSSM
from pulse.registry import register
from pulse.specs import frontier as f
from pulse.specs import mixers as s

register("linear_attention", role="mixer", spec=s.LinearAttentionSpec, module=LinearAttention)
register("sparse_state_attention", role="mixer", spec=s.SparseStateAttentionSpec, module=SparseStateAttention)
register("ssm", role="mixer", spec=s.SSMSpec, module=SelectiveSSM)
register("ntm", role="mixer", spec=s.NTMSpec, module=NTMMemory)
register("gated_deltanet", role="mixer", spec=s.GatedDeltaNetSpec, module=GatedDeltaNet)
register("deltanet", role="mixer", spec=s.DeltaNetSpec, module=DeltaNet)
register("mamba2", role="mixer", spec=s.Mamba2Spec, module=Mamba2)
register("kda", role="mixer", spec=s.KDASpec, module=KimiDeltaAttention)
register("gated_deltaproduct", role="mixer", spec=s.GatedDeltaProductSpec, module=GatedDeltaProduct)
register("rwkv7", role="mixer", spec=s.RWKV7Spec, module=RWKV7)
# the 2026 frontier (specs in pulse/specs/frontier.py)
register("gated_deltanet2", role="mixer", spec=f.GatedDeltaNet2Spec, module=GatedDeltaNet2)
register("forgetting_attention", role="mixer", spec=f.ForgettingAttentionSpec, module=ForgettingAttention, rotary=True)
register("rglru", role="mixer", spec=f.RGLRUSpec, module=RGLRU)
register("mlstm", role="mixer", spec=f.MLSTMSpec, module=MLSTM)
