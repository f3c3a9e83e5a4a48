"""The Hugging Face export directory (`pulse export RUN --format hf --out DIR`), read and written without
importing Transformers.

    DIR/
      config.json               the resolved recipe, special ids, auto_map, the weights' checksum (PulseHFConfig's
                                fields, plus what Transformers adds when it gives them)
      generation_config.json    Transformers' generation defaults, where the exporter gives them
      model.safetensors         the weights (Transformers' names, `model.` + PULSE's; a tied head once)
      tokenizer.json            the run's tokenizer (the byte tokenizer as an equivalent tokenizers file)
      tokenizer_config.json     PreTrainedTokenizerFast and the special tokens, for AutoTokenizer (one declared
      special_tokens_map.json   where the vocabulary has no eos: special_tokens)
      configuration_pulse.py    re-exports of pulse.hf's classes, for trust_remote_code=True where PULSE is
      modeling_pulse.py         installed (after `import pulse` no remote code is needed at all)

The directory is written beside its destination and renamed into place whole, every file with the mode the
umask gives. pulse.export.hf builds the Transformers model and gives its config here; pulse.api.source opens
the directory (`pulse generate DIR`), and pulse.hf.modeling checks it before Transformers loads it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pulse.data.tokenizer import CONFIG as TOKENIZER_CONFIG
from pulse.data.tokenizer import FILE, HFTokenizer
from pulse.errors import PulseError
from pulse.storage.checkpoint import WEIGHTS, Unverified, check_values, fit_tensors, tensors_digest

FORMAT = 1  # config.json's pulse_format: the layout this version writes and reads
CONFIG = "config.json"
GENERATION = "generation_config.json"
SPECIAL_TOKENS = "special_tokens_map.json"
MODEL_TYPE = "pulse"
ARCHITECTURE = "PulseHFForCausalLM"
PREFIX = "model."  # Transformers' name for the PULSE model inside PulseHFForCausalLM
CONFIG_FILE = "configuration_pulse.py"
MODELING_FILE = "modeling_pulse.py"
AUTO_MAP = {
    "AutoConfig": "configuration_pulse.PulseHFConfig",
    "AutoModelForCausalLM": f"modeling_pulse.{ARCHITECTURE}",
}
# the re-exports name pulse.hf.modeling: exports on disk import it, so that module path stays
STUBS = {
    CONFIG_FILE: '"""PULSE\'s Transformers config (pip install pulse[hf]); the code lives in pulse.hf."""\n\n'
                 "from pulse.hf.modeling import PulseHFConfig  # noqa: F401\n",
    MODELING_FILE: '"""PULSE\'s Transformers model (pip install pulse[hf]); the code lives in pulse.hf."""\n\n'
                   "from pulse.hf.modeling import PulseHFConfig, PulseHFForCausalLM  # noqa: F401\n",
}
DECLARED = "<|endoftext|>"  # what an export declares as bos and eos when the tokenizer has neither


# ---- reading ----

def read_json(path: Path, advice: str) -> Any:
    """A JSON file's value; a PulseError naming the file, line and column when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PulseError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                         f"{advice}.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PulseError(f"{path}: cannot be read as UTF-8 text ({err}); {advice}.") from None


def read_config(path: Path, *, pulse_dir: bool) -> dict[str, Any] | None:
    """config.json of a Hugging Face export of a PULSE model (model_type "pulse") in directory `path`, else None.
    A config.json that is not JSON, in a directory that is no PULSE run or checkpoint, is one clear error rather
    than "not a checkpoint". `pulse_dir`: the directory is a PULSE run or checkpoint (which hold no config.json of
    their own, so one there is read only if whole)."""
    file = path / CONFIG
    if not file.is_file():
        return None
    if pulse_dir:
        try:
            config = read_json(file, "")
        except PulseError:
            return None
    else:
        config = read_json(file, "a `pulse export --format hf` directory needs it whole: restore it, or export "
                                 "again")
    return config if isinstance(config, dict) and config.get("model_type") == MODEL_TYPE else None


def stored_recipe(path: Path, config: dict[str, Any], advice: str) -> tuple[dict[str, Any], Path]:
    """The recipe config.json stores, and the weights file, of the export in directory `path`: a PulseError when
    it is of another format or not whole (`advice` says what to give instead)."""
    if config.get("pulse_format") != FORMAT:
        raise PulseError(f"{path}: a Hugging Face export of format {config.get('pulse_format')!r} (PULSE "
                         f"{config.get('pulse_version')}); this PULSE reads format {FORMAT}. Export it again with "
                         "this version (`pulse export RUN --format hf`), or load it with the PULSE that wrote it.")
    recipe = config.get("recipe")
    weights = path / WEIGHTS
    if not isinstance(recipe, dict) or not weights.is_file():
        raise PulseError(f"{path}: config.json has no PULSE recipe or the directory has no {WEIGHTS}; it is not a "
                         f"whole export. {advice}.")
    return recipe, weights


def read_export(path: Path, advice: str, *, pulse_dir: bool) -> tuple[dict[str, Any], dict[str, Any], Path] | None:
    """Directory `path` as a Hugging Face export of a PULSE model — (config.json, the recipe it stores, the weights
    file) — or None when it is none (no config.json of model type "pulse"); a PulseError when it is one of another
    format or not whole (`advice` says what to give instead); `pulse_dir` as read_config's."""
    config = read_config(path, pulse_dir=pulse_dir)
    if config is None:
        return None
    recipe, weights = stored_recipe(path, config, advice)
    return config, recipe, weights


def read_hf_weights(path: Path, config: Mapping[str, Any] | None, allow_unverified: bool) -> dict[str, Tensor]:
    """An export's tensors (Transformers' `model.` prefix dropped), verified against the checksum config.json
    records and for NaN/inf: what `pulse generate DIR` and AutoModelForCausalLM.from_pretrained both load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {name.removeprefix(PREFIX): f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise PulseError(f"{path}: cannot read the tensors (corrupt file?): {err}.") from None
    recorded = (config or {}).get("weights_sha256")
    if recorded is None and not allow_unverified:
        raise Unverified(f"{path}: config.json records no weights_sha256, so the weights cannot be verified. If you "
                         "trust them, load with allow_unverified=True (CLI: --allow-unverified).")
    if recorded is not None and tensors_digest(tensors) != recorded:
        raise PulseError(f"{path}: corrupt — the tensors do not match the checksum in config.json (weights_sha256); "
                         "the file was damaged or altered. Export again from the run (`pulse export RUN --format hf`).")
    check_values(tensors, path, allow_unverified)
    return tensors


def load_hf_weights(model: nn.Module, path: Path, config: Mapping[str, Any] | None, allow_unverified: bool) -> None:
    """The export's tensors (Transformers' `model.` prefix dropped) into `model`, checked against the checksum
    config.json recorded (old weight names renamed as checkpoints' are)."""
    fit_tensors(model, read_hf_weights(path, config, allow_unverified), path)


def read_tokenizer(folder: Path) -> Any:
    """The export's tokenizer.json (the byte tokenizer too is one, as an equivalent file), or None without one; a
    tokenizer_config.json beside it that is not whole JSON is said, not skipped (it holds the special tokens)."""
    if (folder / TOKENIZER_CONFIG).is_file():
        read_json(folder / TOKENIZER_CONFIG, "restore it from the export (or export again)")
    return HFTokenizer.load(folder / FILE) if (folder / FILE).is_file() else None


# ---- writing ----

def hf_tokenizer(tok: Any) -> Any:
    """A tokenizer as a `tokenizers` one (the byte tokenizer as its equivalent file): what an export holds."""
    from pulse.data.tokenizer import ByteTokenizer

    return tok.to_hf() if isinstance(tok, ByteTokenizer) else tok


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


def config_fields(recipe: dict[str, Any], tok: Any, tensors: Mapping[str, Tensor],
                  reset_token_id: int | None) -> dict[str, Any]:
    """PULSE's fields of config.json (PulseHFConfig's arguments): the resolved recipe, the format, the checksum of
    `tensors` (the weights as written, without the prefix), the special ids, auto_map. `tok` is the export's
    tokenizer (hf_tokenizer)."""
    from pulse.version import __version__

    _, aliases = special_tokens(tok)
    # config.json names ids of the model's own vocabulary: a declared bos as the id it is read as, a declared eos
    # not at all (generate() runs to max_new_tokens, as `pulse generate` does)
    bos = tok.bos_id if tok.bos_id is not None else next(iter(aliases.values()), None)
    return {"recipe": recipe, "pulse_version": __version__, "pulse_format": FORMAT,
            "weights_sha256": tensors_digest(dict(tensors)), "bos_token_id": bos, "eos_token_id": tok.eos_id,
            "pad_token_id": tok.pad_id, "reset_token_id": reset_token_id, "token_aliases": aliases or None,
            "auto_map": AUTO_MAP, "architectures": [ARCHITECTURE]}


def check_destination(out: Path, force: bool) -> None:
    """`out` can take an export: a new or empty directory, or (force) one to move aside."""
    from pulse.paths import check_output_dir

    check_output_dir(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise PulseError(f"--out {out} is not empty; pass --force to move it aside to {out.name}.replaced-<time>, "
                         "or give a new directory.")


def write_hf_dir(out: str | Path, config: Mapping[str, Any], tensors: Mapping[str, Tensor], tok: Any, *,
                 generation: Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Write the export directory `out` whole: config.json (`config`: config_fields, with model_type "pulse" added
    when missing), the weights `tensors` (PULSE's names, one per tied group) under Transformers' prefix, the
    tokenizer `tok` (hf_tokenizer) with its special tokens, generation_config.json when given, and the
    re-export files. A non-empty `out` is refused unless `force` (then moved aside)."""
    from safetensors.torch import save_file

    from pulse.paths import move_aside, usual_mode

    out = Path(out)
    check_destination(out, force)
    tmp = out.parent / f".{out.name}.export-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _write_json(tmp / CONFIG, {"model_type": MODEL_TYPE, **config})
        if generation is not None:
            _write_json(tmp / GENERATION, generation)
        weights = {PREFIX + name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})  # the metadata Transformers requires
        _write_tokenizer(tok, tmp)
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


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_tokenizer(tok: Any, folder: Path) -> None:
    """tokenizer.json plus what AutoTokenizer needs to build a PreTrainedTokenizerFast from it."""
    tok.save(folder)
    names, _ = special_tokens(tok)
    _write_json(folder / TOKENIZER_CONFIG,
                {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **names})
    _write_json(folder / SPECIAL_TOKENS, names)

