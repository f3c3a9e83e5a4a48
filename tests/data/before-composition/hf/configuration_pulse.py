"""PULSE's Transformers config (pip install pulse[hf]); the code lives in pulse.hf."""

from pulse.hf.modeling import PulseHFConfig  # noqa: F401
