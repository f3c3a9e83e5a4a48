"""The facade: what users call by name, above the assembler.

PulseConfig and the seed's names, PulseForCausalLM (from_config / from_recipe / from_pretrained),
the size-first SequencePulse, load_checkpoint, open_source (the one way to open a recipe, checkpoint
or run), and zoo cards by name (list_models, create_model).
Nothing below this room imports it.
"""

from pulse.api.cards import create_model, list_cards, list_models
from pulse.api.causal_lm import CausalLMOutput, PulseForCausalLM
from pulse.api.checkpoints import load_checkpoint
from pulse.api.config import PulseConfig, seed_mixers
from pulse.api.seed import SequencePulse, sequence_pulse
from pulse.api.source import Source, open_source

__all__ = [
    "CausalLMOutput",
    "PulseConfig",
    "PulseForCausalLM",
    "SequencePulse",
    "Source",
    "create_model",
    "list_cards",
    "list_models",
    "load_checkpoint",
    "open_source",
    "seed_mixers",
    "sequence_pulse",
]
