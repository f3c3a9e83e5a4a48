"""PULSE: a declarative, config-driven zoo of state-based sequence models."""

from __future__ import annotations

from pulse import registry, tasks  # noqa: F401  (tasks register their kinds)
from pulse.api import (
    CausalLMOutput,
    PulseConfig,
    PulseForCausalLM,
    SequencePulse,
    create_model,
    list_models,
    load_checkpoint,
    open_source,
    sequence_pulse,
)
from pulse.assemble import build_mixer, build_model, make_spec
from pulse.blocks.layers.attention import CausalSelfAttention
from pulse.blocks.mixers.deltanet import DeltaNet, GatedDeltaNet
from pulse.blocks.mixers.linear_attention import LinearAttention
from pulse.blocks.mixers.mamba2 import Mamba2
from pulse.blocks.mixers.ntm import NTMMemory
from pulse.blocks.mixers.sparse_state_attention import SparseStateAttention
from pulse.blocks.mixers.ssm import SelectiveSSM
from pulse.blocks.pulse.allocator import AdaptiveStateAllocator
from pulse.blocks.pulse.hierarchical import HierarchicalStateManager
from pulse.blocks.pulse.propagator import StatePropagator
from pulse.blocks.pulse.pulse_layer import PulseLayer
from pulse.blocks.pulse.router import TokenToStateRouter
from pulse.blocks.pulse.state_manager import StateManager
from pulse.contract import Mixer
from pulse.data.tokenizer import ByteTokenizer
from pulse.errors import PulseError
from pulse.hf import register_when_imported as _register_hf
from pulse.models.output import ModelOutput
from pulse.models.sequence import SequenceModel, SimplePulse
from pulse.specs import RecipeBase as Recipe
from pulse.specs import json_schema, load_recipe, recipe_from_dict
from pulse.storage.checkpoint import save_checkpoint
from pulse.version import __version__

_register_hf()  # AutoModelForCausalLM knows "pulse" once transformers is imported (without importing it here)


def list_blocks(pattern: str = "*", role: str | None = None) -> list[registry.Entry]:
    """Registered kinds whose name matches the glob `pattern`, optionally of one role."""
    return registry.entries(pattern, role)


__all__ = [
    "AdaptiveStateAllocator",
    "CausalLMOutput",
    "ModelOutput",
    "SequenceModel",
    "sequence_pulse",
    "ByteTokenizer",
    "CausalSelfAttention",
    "DeltaNet",
    "GatedDeltaNet",
    "Mamba2",
    "HierarchicalStateManager",
    "LinearAttention",
    "Mixer",
    "NTMMemory",
    "PulseConfig",
    "PulseError",
    "PulseForCausalLM",
    "PulseLayer",
    "Recipe",
    "SelectiveSSM",
    "SequencePulse",
    "SimplePulse",
    "SparseStateAttention",
    "StateManager",
    "StatePropagator",
    "TokenToStateRouter",
    "__version__",
    "build_mixer",
    "build_model",
    "create_model",
    "json_schema",
    "list_blocks",
    "list_models",
    "load_checkpoint",
    "load_recipe",
    "open_source",
    "make_spec",
    "recipe_from_dict",
    "registry",
    "save_checkpoint",
]
