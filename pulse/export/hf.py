"""`pulse export RUN --format hf --out DIR`: a directory every Transformers tool loads.

    DIR/
      config.json               PulseHFConfig: the resolved recipe, special ids, auto_map, the weights' checksum
      model.safetensors         the weights (Transformers' names, `model.` + PULSE's)
      tokenizer.json            the run's tokenizer (the byte tokenizer as an equivalent tokenizers file)
      tokenizer_config.json     PreTrainedTokenizerFast and the special tokens, for AutoTokenizer (one declared
                                where the vocabulary has no eos: special_tokens)
      configuration_pulse.py    re-exports of pulse.hf's classes, for trust_remote_code=True where PULSE is
      modeling_pulse.py         installed (after `import pulse` no remote code is needed at all)

The directory is written beside its destination and renamed into place whole, every file with the mode the
umask gives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pulse.api.source import HF_FORMAT as FORMAT  # config.json's pulse_format: what open_source reads back
from pulse.errors import PulseError

CONFIG_FILE = "configuration_pulse.py"
MODELING_FILE = "modeling_pulse.py"
AUTO_MAP = {
    "AutoConfig": "configuration_pulse.PulseHFConfig",
    "AutoModelForCausalLM": "modeling_pulse.PulseHFForCausalLM",
}
STUBS = {
    CONFIG_FILE: '"""PULSE\'s Transformers config (pip install pulse[hf]); the code lives in pulse.hf."""\n\n'
                 "from pulse.hf.modeling import PulseHFConfig  # noqa: F401\n",
    MODELING_FILE: '"""PULSE\'s Transformers model (pip install pulse[hf]); the code lives in pulse.hf."""\n\n'
                   "from pulse.hf.modeling import PulseHFConfig, PulseHFForCausalLM  # noqa: F401\n",
}


def hf_tokenizer(lm: Any):
    """The run's tokenizer as a `tokenizers` one (the byte tokenizer as its equivalent file)."""
    from pulse.data.tokenizer import ByteTokenizer

    tok = lm.tokenizer
    return tok.to_hf() if isinstance(tok, ByteTokenizer) else tok


DECLARED = "<|endoftext|>"  # what an export declares as bos and eos when the tokenizer has neither


def special_tokens(tok: Any) -> tuple[dict[str, str], dict[str, int]]:
    """The bos/eos/pad token names an export declares (tokenizer_config.json), and the ids the model reads in
    place of declared tokens it does not have.

    A vocabulary with no eos (the byte tokenizer at 256 ids) gets `<|endoftext|>` as eos, and as bos too when it
    has no bos either: lm-eval needs both (its prefix for an empty context, its stop and pad). Transformers gives
    the token the next id, one past the model's vocabulary, and the model reads it as the newline byte (the
    tokenizer's id for "\\n") — a token it knows, which begins and ends a line of the text it learned; it never
    predicts it. tokenizer.json stays the run's own: PULSE reads the export with the vocabulary it trained on.
    """
    names = {k: tok.tokenizer.id_to_token(i) for k, i in
             (("bos_token", tok.bos_id), ("eos_token", tok.eos_id), ("pad_token", tok.pad_id)) if i is not None}
    newline = tok.tokenizer.encode("\n", add_special_tokens=False).ids
    if tok.eos_id is not None or len(newline) != 1:
        return names, {}
    names["eos_token"] = DECLARED
    names.setdefault("bos_token", DECLARED)
    return names, {str(tok.vocab_size): newline[0]}


def hf_model(lm: Any):
    """PulseForCausalLM `lm` as a PulseHFForCausalLM holding the same weights (config with auto_map, checksum)."""
    from pulse.hf.modeling import PulseHFConfig, PulseHFForCausalLM
    from pulse.storage.checkpoint import _unique_tensors, tensors_digest
    from pulse.version import __version__

    tok = hf_tokenizer(lm)
    names, aliases = special_tokens(tok)
    # config.json names ids of the model's own vocabulary: a declared bos as the id it is read as, a declared eos
    # not at all (generate() runs to max_new_tokens, as `pulse generate` does)
    bos = tok.bos_id if tok.bos_id is not None else next(iter(aliases.values()), None)
    config = PulseHFConfig(recipe=lm.recipe.to_dict(), pulse_version=__version__, pulse_format=FORMAT,
                           weights_sha256=tensors_digest(_unique_tensors(lm.model)), bos_token_id=bos,
                           eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, reset_token_id=lm.reset_token_id,
                           token_aliases=aliases or None, auto_map=AUTO_MAP,
                           architectures=["PulseHFForCausalLM"])
    model = PulseHFForCausalLM(config)
    model.model.load_state_dict(lm.model.state_dict())
    return model.to(next(lm.parameters()).device)


def export_hf(lm: Any, out: str | Path, *, force: bool = False) -> Path:
    """Write PulseForCausalLM `lm` (its weights, recipe and tokenizer) as a Transformers directory at `out`."""
    from pulse.paths import check_output_dir, move_aside, usual_mode

    out = Path(out)
    check_output_dir(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise PulseError(f"--out {out} is not empty; pass --force to move it aside to {out.name}.replaced-<time>, "
                         "or give a new directory.")
    model = hf_model(lm)
    tmp = out.parent / f".{out.name}.export-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        _write_tokenizer(hf_tokenizer(lm), tmp)
        for name, text in STUBS.items():
            (tmp / name).write_text(text, encoding="utf-8")
        for file in tmp.iterdir():
            usual_mode(file)  # safetensors writes model.safetensors 0600 whatever the umask
        if out.exists():
            shutil.rmtree(out) if not any(out.iterdir()) else move_aside(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_tokenizer(tok: Any, folder: Path) -> None:
    """tokenizer.json plus what AutoTokenizer needs to build a PreTrainedTokenizerFast from it."""
    tok.save(folder)
    names, _ = special_tokens(tok)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **names}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(names, indent=2, sort_keys=True) + "\n")
