"""`pulse export RUN --format hf --out DIR`: a directory every Transformers tool loads.

The directory's layout and files are pulse.storage.hf_dir's (which also reads it back, without Transformers);
here the Transformers model is built (pulse.hf.modeling.hf_model) and gives what only Transformers writes:
config.json as PulseHFConfig serializes it, and generation_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pulse.hf import require_transformers
from pulse.storage.checkpoint import unique_tensors
from pulse.storage.hf_dir import check_destination, hf_tokenizer, write_hf_dir


def export_hf(lm: Any, out: str | Path, *, force: bool = False) -> Path:
    """Write PulseForCausalLM `lm` (its weights, recipe and tokenizer) as a Transformers directory at `out`."""
    require_transformers()  # a PulseError naming the `hf` extra, not an ImportError
    from pulse.hf.modeling import hf_model

    out = Path(out)
    check_destination(out, force)  # before building anything
    model = hf_model(lm)
    model.config.dtype = str(model.dtype).removeprefix("torch.")  # what save_pretrained records
    config = json.loads(model.config.to_json_string(use_diff=True))
    generation = None
    if model.can_generate() and model.generation_config is not None:
        generation = json.loads(model.generation_config.to_json_string(use_diff=True, keys_to_pop=["compile_config"]))
    # the weights as config.json's checksum was taken (hf_model: from lm's own tensors)
    return write_hf_dir(out, config, unique_tensors(lm.model), hf_tokenizer(lm.tokenizer), generation=generation,
                        force=force)
