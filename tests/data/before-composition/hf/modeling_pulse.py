"""PULSE's Transformers model (pip install pulse[hf]); the code lives in pulse.hf."""

from pulse.hf.modeling import PulseHFConfig, PulseHFForCausalLM  # noqa: F401
