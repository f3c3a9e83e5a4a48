"""PULSE language models as Hugging Face Transformers models (`pip install "pulse[hf]"`).

`PulseHFConfig` carries the whole resolved PULSE recipe (`config.recipe`), so the model is
rebuilt by PULSE's own assembler; `PulseHFForCausalLM` wraps the LanguageModel it builds
(weights under `model.`), gives `CausalLMOutputWithPulseState` (loss with `labels=`,
logits) and generates with `GenerationMixin`: the mixers' recurrent state is the cache
(`pulse_state`), so each new token costs one step whatever the context, and greedy
output equals `pulse generate`. The loss is PulseForCausalLM's (pulse.models.lm.next_token_loss);
`hf_model(lm)` gives a PulseForCausalLM as one (the export and the harness use it).

Padding: right padding in a forward is exact at the real positions (the model is causal);
left padding, or any padding when the state is carried (generation), would feed pad tokens
into the recurrent state, so it is refused with an error rather than answered wrongly.

# b batch · t time · v vocab
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from pulse.errors import PulseError
from pulse.models.lm import next_token_loss
from pulse.storage.hf_dir import MODEL_TYPE


class PulseHFConfig(PretrainedConfig):
    """The resolved PULSE recipe (`recipe`, a dict) plus what Transformers reads (vocab, special ids)."""

    model_type = MODEL_TYPE

    def __init__(self, recipe: dict[str, Any] | None = None, pulse_version: str | None = None,
                 weights_sha256: str | None = None, reset_token_id: int | None = None,
                 token_aliases: dict[str, int] | None = None, **kwargs: Any):
        self.recipe = recipe or {}
        # the token where every layer starts afresh (the eos of a model trained with task.reset_at_eos)
        self.reset_token_id = reset_token_id
        # ids the tokenizer declares beyond the model's vocabulary and the id the model reads in their place: a
        # vocabulary without bos/eos declares <|endoftext|> (bos and eos, for lm-eval), read as the newline byte
        self.token_aliases = token_aliases
        self.pulse_version = pulse_version
        self.weights_sha256 = weights_sha256
        model = self.recipe.get("model", {})
        kwargs.setdefault("vocab_size", model.get("vocab_size"))
        kwargs.setdefault("hidden_size", model.get("dim"))
        kwargs.setdefault("num_hidden_layers", model.get("depth"))
        kwargs.setdefault("tie_word_embeddings", bool(model.get("tie_embeddings", True)))
        super().__init__(**kwargs)


@dataclass
class PulseState:
    """The recurrent state of every layer after `seen` tokens: what generate() carries as its cache."""

    state: dict[str, Any]
    seen: int


@dataclass
class CausalLMOutputWithPulseState(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    pulse_state: PulseState | None = None


class PulseHFForCausalLM(PreTrainedModel, GenerationMixin):
    """A PULSE LanguageModel behind the Transformers API: from_pretrained, forward(labels=), generate()."""

    config_class = PulseHFConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_cache_class = False

    def __init__(self, config: PulseHFConfig):
        super().__init__(config)
        from pulse.assemble import build_model

        recipe = _recipe(config)
        if recipe.model.kind != "lm":
            raise PulseError(f"config.json holds a `{recipe.model.kind}` model; Transformers' causal LM needs a "
                             "language model ([model] kind = \"lm\").")
        self.model = build_model(recipe)
        self._tied_weights_keys = {"model.head.weight": "model.embed.weight"} if recipe.model.tie_embeddings else None
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """PULSE's modules initialize themselves; Transformers' default init would overwrite that."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, allow_unverified: bool = False,
                        **kwargs: Any) -> PulseHFForCausalLM:
        """Transformers' from_pretrained, after the checks `pulse generate DIR` makes: the weights match the checksum
        config.json records, hold no NaN/inf, and fit the recipe in config.json exactly (no weight missing,
        unexpected or of another shape); a PulseError otherwise. allow_unverified=True accepts an export that
        records no checksum, or weights with NaN/inf."""
        renamed = _verify_export(pretrained_model_name_or_path, kwargs, allow_unverified)
        if renamed:  # an export written before the models held their stack as a child names them model.layers.…
            kwargs.setdefault("key_mapping", {f"^{re.escape(old)}$": new for old, new in renamed.items()})
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        (model[0] if isinstance(model, tuple) else model)._restore_computed_tensors()
        return model

    def _restore_computed_tensors(self) -> None:
        """Transformers builds the model on the meta device and loads only the saved tensors; what PULSE's modules
        compute in their constructors (non-persistent buffers, tensor attributes) is taken from a fresh build."""
        from pulse.assemble import build_model

        with torch.device("cpu"):
            fresh = build_model(_recipe(self.config))
        for (_, loaded), (_, built) in zip(self.model.named_modules(), fresh.named_modules(), strict=True):
            device = next((t.device for t in loaded.parameters(recurse=False) if t.device.type != "meta"), None)
            device = device or next((p.device for p in self.parameters() if p.device.type != "meta"), "cpu")
            for name in loaded._non_persistent_buffers_set:
                loaded._buffers[name] = built._buffers[name].to(device)
            for name, value in vars(loaded).items():
                if isinstance(value, torch.Tensor) and value.device.type == "meta":
                    setattr(loaded, name, getattr(built, name).to(device))

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.embed

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.model.head

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, pulse_state: PulseState | None = None, use_cache: bool | None = None,
                return_dict: bool | None = None, **kwargs: Any) -> CausalLMOutputWithPulseState:
        """Logits (b, t, v) for input_ids (b, t) continuing `pulse_state`; with labels (b, t), the mean next-token
        loss of labels[:, 1:] from positions :-1 (shifted here, −100 ignored)."""
        if input_ids is None:
            raise PulseError("PULSE models take input_ids (token ids); inputs_embeds is not supported.")
        _check_mask(attention_mask, input_ids, carried=pulse_state is not None or bool(use_cache))
        reset = getattr(self.config, "reset_token_id", None)
        input_ids = _aliased(input_ids, getattr(self.config, "token_aliases", None))
        logits, state = self.model(input_ids, pulse_state.state if pulse_state is not None else None,
                                   doc_starts=None if reset is None else input_ids == reset)
        loss = None if labels is None else next_token_loss(logits, labels)
        seen = (pulse_state.seen if pulse_state is not None else 0) + input_ids.shape[1]
        out = CausalLMOutputWithPulseState(loss=loss, logits=logits, pulse_state=PulseState(state, seen))
        return out if return_dict is not False else out.to_tuple()

    def prepare_inputs_for_generation(self, input_ids: Tensor, pulse_state: PulseState | None = None,
                                      attention_mask: Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        """Only the tokens the carried state has not seen yet (the prompt first, then one token per step)."""
        if pulse_state is not None:
            input_ids = input_ids[:, pulse_state.seen:]
        return {"input_ids": input_ids, "pulse_state": pulse_state, "attention_mask": attention_mask,
                "use_cache": True}

    def _update_model_kwargs_for_generation(self, outputs: Any, model_kwargs: dict[str, Any], *args: Any,
                                            **kwargs: Any) -> dict[str, Any]:
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        model_kwargs["pulse_state"] = outputs.pulse_state
        return model_kwargs

    def _reorder_cache(self, past: Any, beam_idx: Tensor) -> Any:
        raise PulseError("beam search is not supported for PULSE models yet; use greedy decoding or sampling.")


def hf_model(lm: Any) -> PulseHFForCausalLM:
    """PulseForCausalLM `lm` as a PulseHFForCausalLM holding the same weights, on its device and in its dtype; its
    config holds what an export's config.json does (pulse.storage.hf_dir.config_fields: recipe, checksum, ids)."""
    from pulse.storage.checkpoint import unique_tensors
    from pulse.storage.hf_dir import config_fields, hf_tokenizer

    fields = config_fields(lm.recipe.to_dict(), hf_tokenizer(lm.tokenizer), unique_tensors(lm.model),
                           lm.reset_token_id)
    first = next(lm.parameters())
    model = PulseHFForCausalLM(PulseHFConfig(**fields)).to(device=first.device, dtype=first.dtype)
    model.model.load_state_dict(lm.model.state_dict())  # in the weights' own dtype: the checksum is theirs
    return model


def _recipe(config: PulseHFConfig):
    from pulse.specs.load import as_stored, recipe_from_dict

    return recipe_from_dict(as_stored(config.recipe), source="config.json (recipe)")


def _aliased(ids: Tensor, aliases: dict[str, int] | None) -> Tensor:
    """ids with each declared id (a key of `aliases`) replaced by the id the model reads in its place."""
    if not aliases:
        return ids
    out = ids.clone()
    for declared, read in aliases.items():
        out[ids == int(declared)] = read
    return out


HUB_KEYS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def _verify_export(name: Any, kwargs: dict[str, Any], allow_unverified: bool) -> dict[str, str]:
    """Before Transformers loads anything: the export's weights against its checksum and its recipe (what
    `pulse generate DIR` checks), so a damaged file or an edited config.json is an error, not wrong logits.
    Returns the file's weight names that have another name today (stack_weight_name), under Transformers' prefix;
    nothing where the file is not found here (not on the Hub, or sharded: Transformers says what is missing)."""
    import warnings
    from pathlib import Path

    from transformers.utils import cached_file

    from pulse.assemble import build_model
    from pulse.storage.checkpoint import WEIGHTS, fit_tensors, stack_weight_name
    from pulse.storage.hf_dir import PREFIX, read_hf_weights

    hub = {k: kwargs[k] for k in HUB_KEYS if k in kwargs}
    local = Path(str(name)) / (hub.get("subfolder") or "")
    try:
        path = local / WEIGHTS if local.is_dir() else Path(cached_file(name, WEIGHTS, **hub))
    except (OSError, TypeError, ValueError):  # not on the Hub, or sharded: Transformers says what is missing
        return {}
    if not path.is_file():
        return {}
    config = kwargs.get("config")
    if not isinstance(config, PulseHFConfig):
        config = PulseHFConfig.from_pretrained(name, **hub)
    tensors = read_hf_weights(path, config.to_dict(), allow_unverified)
    with torch.device("meta"):  # the model the recipe describes, with no memory: only names and shapes are read
        expected = build_model(_recipe(config))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loading into meta tensors is a no-op, and torch says so
            fit_tensors(expected, tensors, path)
    except PulseError as err:  # fit_tensors' own advice (build from the checkpoint's recipe) is what failed here
        found = str(err).split("; the checkpoint comes")[0]
        raise PulseError(f"{found}; the recipe is {path.parent / 'config.json'} (`recipe`): it was edited, or "
                         "belongs to other weights; restore it, or export again.") from None
    known = expected.state_dict()
    return {PREFIX + name: PREFIX + stack_weight_name(name, known) for name in tensors
            if stack_weight_name(name, known) != name}


def _check_mask(mask: Tensor | None, input_ids: Tensor, *, carried: bool) -> None:
    """Refuse padding the model would read into its state: left padding, or any when the state is carried."""
    if mask is None or bool(mask.all()):
        return
    m = mask.to(torch.bool)
    right_padded = bool((m.cummin(dim=1).values == m).all())  # every row: ones, then only zeros
    if carried or not right_padded:
        where = "with the recurrent state carried (generation)" if carried else "on the left"
        raise PulseError(f"attention_mask pads {where}; a PULSE model reads every token into its recurrent state "
                         "and would read the pads too. Pad on the right for a forward pass (the real positions are "
                         "then exact), and generate one sequence at a time, or same-length batches, without padding.")


def _register() -> None:
    """AutoConfig / AutoModelForCausalLM learn model type "pulse", so an export loads without remote code."""
    for register, args in ((AutoConfig.register, (MODEL_TYPE, PulseHFConfig)),
                           (AutoModelForCausalLM.register, (PulseHFConfig, PulseHFForCausalLM))):
        try:
            register(*args)
        except ValueError:  # registered already
            pass


_register()
