"""The Hugging Face-like face of a PULSE language model: PulseConfig and PulseForCausalLM.

PulseConfig speaks the flat names of the original PULSE description (hidden_size,
num_layers, num_states, gate_type, …) and maps onto a recipe's [model] table, so the
Python API and a TOML recipe build the same model. PulseForCausalLM wraps the
generic LanguageModel: a loss, generation with carried state, and checkpoints.

# b batch · t time · v vocab
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from pulse.errors import PulseError
from pulse.generation import GenerationStep, stream
from pulse.tokenizer import NUM_BYTES, ByteTokenizer, tokenizer_for

IGNORE_INDEX = -100


class PulseConfig(BaseModel):
    """A language model in flat, seed-style names; `to_recipe()` gives the equivalent recipe.

    `layout` lists mixer kinds (any registered ones), cycled over `num_layers`. The
    mixer fields (num_heads, num_states, state_dim, chunk_size, gate_type) go to every
    mixer of the layout whose spec has them; None keeps that mixer's own default, and
    setting one that no mixer of the layout uses is an error. `mixer_options` adds any
    other field per kind, e.g. {"pulse": {"communication": False}}.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(NUM_BYTES + 3, ge=2, description="token ids; 259 = bytes + bos/eos/pad")
    hidden_size: int = Field(256, ge=1, description="model width d")
    num_layers: int = Field(4, ge=1, description="residual layers")
    layout: list[str] = Field(default_factory=lambda: ["pulse"], description="mixer kinds, cycled over the layers")
    num_heads: int | None = Field(None, ge=1, description="heads of every mixer that has heads")
    num_states: int | None = Field(None, ge=1, description="slots per PULSE layer")
    state_dim: int | None = Field(None, ge=1, description="slot width of PULSE layers")
    chunk_size: int | None = Field(None, ge=1, description="tokens per chunk of chunk-recurrent mixers")
    gate_type: str | None = Field(None, description="slot update rule: gru, lstm or mingru")
    mixer_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="more mixer fields, per kind")
    position_embedding: Literal["rotary", "learned", "none"] = Field("rotary", description="position encoding")
    max_position_embeddings: int = Field(2048, ge=1, description="longest sequence with learned positions")
    mlp: str | None = Field("swiglu", description="channel mixer kind after each mixer; None for none")
    norm: str = Field("rmsnorm", description="norm kind")
    tie_word_embeddings: bool = Field(True, description="share the embedding matrix with the output head")

    def __init__(self, **data: Any):
        from pulse.specs.load import format_errors

        try:
            super().__init__(**data)
        except ValidationError as err:
            raise PulseError(format_errors(err, type(self), "PulseConfig")) from None

    def to_model_dict(self) -> dict[str, Any]:
        """The recipe's [model] table."""
        from pulse.specs.models import seed_mixers

        mixers = seed_mixers(self.layout, self.model_dump(), explicit=self.model_fields_set, options=self.mixer_options)
        positions = {
            "rotary": {"kind": "rotary"},
            "learned": {"kind": "learned", "max_seq_len": self.max_position_embeddings},
            "none": None,
        }[self.position_embedding]
        return {
            "kind": "lm",
            "vocab_size": self.vocab_size,
            "dim": self.hidden_size,
            "depth": self.num_layers,
            "layout": list(self.layout),
            "mixers": mixers,
            "mlp": {"kind": self.mlp} if self.mlp else None,
            "norm": {"kind": self.norm},
            "positions": positions,
            "tie_embeddings": self.tie_word_embeddings,
            "tokenizer": "bytes",
        }

    def to_recipe(self):
        """The validated recipe ([model] only) that builds this model."""
        from pulse.specs.load import recipe_from_dict

        return recipe_from_dict({"model": self.to_model_dict()}, source="PulseConfig")


@dataclass
class CausalLMOutput:
    """logits (b, t, v); loss (mean next-token cross-entropy over labels ≠ −100) when labels were given; state."""

    logits: Tensor
    loss: Tensor | None
    state: dict[str, Any]


class PulseForCausalLM(nn.Module):
    """A causal LM from a PulseConfig or a recipe: forward with loss, generate, save/load.

    `self.model` is the LanguageModel the recipe assembles (checkpoints hold its
    weights, so `pulse build --out`, `pulse train` and save_pretrained write the same
    format); `self.recipe` is the validated recipe; `self.config` is the PulseConfig it
    came from, or None.
    """

    def __init__(self, config: PulseConfig | Any, *, device=None, dtype=None):
        from pulse.assemble import build_model

        super().__init__()
        recipe = config.to_recipe() if isinstance(config, PulseConfig) else config
        self._setup(recipe, build_model(_check_lm(recipe), device=device, dtype=dtype))
        self.config = config if isinstance(config, PulseConfig) else None

    def _setup(self, recipe: Any, model: nn.Module) -> None:
        self.recipe = recipe
        self.model = model
        self.config = None

    @classmethod
    def from_recipe(cls, path: str | Path, overrides: Iterable[str] = (), *, device=None, dtype=None) -> PulseForCausalLM:
        """Fresh weights (torch's current RNG) for the model of a recipe file, with --set style overrides."""
        from pulse.specs.load import load_recipe

        return cls(load_recipe(path, overrides), device=device, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device=None, dtype=None) -> PulseForCausalLM:
        """Rebuild from a checkpoint alone (its stored recipe) and load its weights."""
        from pulse.assemble import build_model
        from pulse.checkpoint import load_recipe_from_checkpoint, load_weights

        recipe = load_recipe_from_checkpoint(directory)
        model = build_model(_check_lm(recipe), device=device, dtype=dtype)
        load_weights(model, directory)
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out._setup(recipe, model)
        return out

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write model.safetensors (weights + recipe metadata) and recipe.json atomically; returns the weights path."""
        from pulse.checkpoint import save_checkpoint

        return save_checkpoint(self.model, self.recipe, directory)

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def tokenizer(self) -> ByteTokenizer:
        return tokenizer_for(self.recipe.model.tokenizer, self.vocab_size)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        return self.model.init_state(batch, device=device, dtype=dtype)

    def example_input(self, batch: int, seq_len: int, *, device=None) -> Tensor:
        return self.model.example_input(batch, seq_len, device=device)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, state: dict[str, Any] | None = None) -> CausalLMOutput:
        """Logits for input_ids (b, t) continuing `state`; with labels (b, t), the loss of predicting
        labels[:, 1:] from positions :-1 (labels are shifted here, as in Hugging Face; −100 is ignored)."""
        logits, state = self.model(input_ids, state)
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise PulseError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}.")
            # half-precision logits are upcast for a stable softmax; float64 stays float64
            shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
        return CausalLMOutput(logits, loss, state)

    def step(self, input_ids: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Logits (b, v) for one new token per row (b,), and the state after it."""
        return self.model.step(input_ids, state)

    def stream(self, input_ids: Tensor, max_new_tokens: int = 32, **kwargs: Any) -> Iterator[GenerationStep]:
        """generate(), one GenerationStep (ids, logits, finished) at a time; see pulse.generation.stream."""
        seed = kwargs.pop("seed", None)
        if seed is not None and kwargs.get("generator") is None:
            kwargs["generator"] = torch.Generator(device=input_ids.device).manual_seed(seed)
        return stream(self.model, input_ids, max_new_tokens, **kwargs)

    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int = 32,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        do_sample: bool = False,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        vocab_limit: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        state: dict[str, Any] | None = None,
        streamer: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """input_ids (b, t) followed by up to max_new_tokens new ids per row: (b, t + n).

        One prefill pass over input_ids (continuing `state` if given), then one `step` per
        token carrying every layer's state. Greedy unless do_sample; sampling applies
        temperature, then top_k, then top_p, drawing from `generator` (or a fresh one
        seeded with `seed`). Rows that emit eos_token_id are filled with pad_token_id
        (default: eos) afterwards; generation stops early when every row has. Only ids below
        `vocab_limit` are ever chosen (e.g. the tokenizer's size in a larger vocabulary). `streamer`
        is called with each new column of ids (b,) as soon as it exists.
        """
        steps = self.stream(
            input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, vocab_limit=vocab_limit, seed=seed,
            generator=generator, state=state,
        )
        columns = [input_ids]
        for s in steps:
            columns.append(s.tokens.unsqueeze(1))
            if streamer is not None:
                streamer(s.tokens)
        return torch.cat(columns, dim=1)

    def generate_text(self, prompt: str, max_new_tokens: int = 64, **kwargs: Any) -> str:
        """The text generated after `prompt` (byte tokenizer; stops at eos when the vocabulary has one)."""
        tok = self.tokenizer
        ids = tok.encode(prompt) or ([tok.bos_id] if tok.bos_id is not None else [])
        if not ids:
            raise PulseError("the prompt is empty and this vocabulary has no bos token to start from; give a prompt.")
        device = next(self.parameters()).device
        kwargs.setdefault("eos_token_id", tok.eos_id)
        kwargs.setdefault("vocab_limit", tok.vocab_size)
        out = self.generate(torch.tensor([ids], device=device), max_new_tokens, **kwargs)
        return tok.decode(out[0, len(ids):])


def _check_lm(recipe: Any) -> Any:
    kind = getattr(recipe.model, "kind", None)
    if kind != "lm":
        raise PulseError(
            f"PulseForCausalLM needs a language-model recipe ([model] kind = \"lm\"), but {recipe.source or 'this recipe'} "
            f"has model kind `{kind}`; build it with pulse.build_model instead."
        )
    return recipe
