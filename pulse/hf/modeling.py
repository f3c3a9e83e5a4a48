"""PULSE language models as Hugging Face Transformers models (`pip install "pulse[hf]"`).

`PulseHFConfig` carries the whole resolved PULSE recipe (`config.recipe`), so the model is
rebuilt by PULSE's own assembler; `PulseHFForCausalLM` wraps the LanguageModel it builds
(weights under `model.`), gives `CausalLMOutputWithPulseState` (loss with `labels=`,
logits) and generates with `GenerationMixin`: the mixers' recurrent state is the cache
(`pulse_state`), so each new token costs one step whatever the context, and greedy
output equals `pulse generate`.

Padding: right padding in a forward is exact at the real positions (the model is causal);
left padding, or any padding when the state is carried (generation), would feed pad tokens
into the recurrent state, so it is refused with an error rather than answered wrongly.

# b batch · t time · v vocab
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from pulse.errors import PulseError

MODEL_TYPE = "pulse"


class PulseHFConfig(PretrainedConfig):
    """The resolved PULSE recipe (`recipe`, a dict) plus what Transformers reads (vocab, special ids)."""

    model_type = MODEL_TYPE

    def __init__(self, recipe: dict[str, Any] | None = None, pulse_version: str | None = None,
                 weights_sha256: str | None = None, reset_token_id: int | None = None, **kwargs: Any):
        self.recipe = recipe or {}
        # the token where every layer starts afresh (the eos of a model trained with task.reset_at_eos)
        self.reset_token_id = reset_token_id
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
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> PulseHFForCausalLM:
        # an export written before the models held their stack as a child names its weights model.layers.…
        kwargs.setdefault("key_mapping", {r"^model\.(positions|layers|final_norm)\.": r"model.stack.\1."})
        model = super().from_pretrained(*args, **kwargs)
        model._restore_computed_tensors()
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
        logits, state = self.model(input_ids, pulse_state.state if pulse_state is not None else None,
                                   doc_starts=None if reset is None else input_ids == reset)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
            loss = F.cross_entropy(shifted, labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
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


def _recipe(config: PulseHFConfig):
    from pulse.specs.load import recipe_from_dict

    return recipe_from_dict(config.recipe, source="config.json (recipe)")


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
