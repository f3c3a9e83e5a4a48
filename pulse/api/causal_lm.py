"""The Hugging Face-like face of a PULSE language model: PulseForCausalLM and its output.

PulseForCausalLM wraps the generic LanguageModel the assembler builds from a recipe (or
from a PulseConfig, the seed's flat names): a loss, generation with carried state, and
checkpoints in the library's safetensors format.

# b batch · t time · v vocab
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pulse.api.config import PulseConfig
from pulse.api.source import Source, open_source
from pulse.assemble import build_model
from pulse.data.tokenizer import Tokenizer, reset_token, tokenizer_of
from pulse.errors import PulseError
from pulse.generation import GenerationStep, resolve_decoding, stream
from pulse.models.lm import next_token_loss
from pulse.models.output import ModelOutput
from pulse.specs.load import load_recipe
from pulse.specs.recipe import RecipeBase
from pulse.storage.checkpoint import save_checkpoint


@dataclass
class CausalLMOutput(ModelOutput):
    """loss (mean next-token cross-entropy over labels ≠ −100; None without labels), logits (b, t, v)
    and the state to continue from. Read as `out.loss` or `out["loss"]`; unpacks in this order."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    state: dict[str, Any] | None = None


class PulseForCausalLM(nn.Module):
    """A causal LM from a PulseConfig or a recipe: forward with loss, generate, save/load.

    `self.model` is the LanguageModel the recipe assembles (checkpoints hold its
    weights, so `pulse build --out`, `pulse train` and save_pretrained write the same
    format); `self.recipe` is the validated recipe; `self.config` is the PulseConfig it
    came from, or None.
    """

    def __init__(
        self, config: PulseConfig | RecipeBase, *, model: nn.Module | None = None, device=None, dtype=None,
        tokenizer: Tokenizer | None = None,
    ):
        """Fresh weights for the model of `config` (a PulseConfig or a language-model recipe), or wrap
        `model`, an already built LanguageModel of that recipe (what from_pretrained passes); `tokenizer`
        is the one stored with the weights (default: the one the recipe names)."""
        super().__init__()
        recipe = config.to_recipe() if isinstance(config, PulseConfig) else config
        _check_lm(recipe)
        self.recipe = recipe
        self.config = config if isinstance(config, PulseConfig) else None
        self.model = model if model is not None else build_model(recipe, device=device, dtype=dtype)
        self._tokenizer = tokenizer

    @classmethod
    def from_config(
        cls, config: PulseConfig | None = None, *, device=None, dtype=None, **names: Any
    ) -> PulseForCausalLM:
        """Fresh weights from a PulseConfig, or from its seed-named fields given as keywords."""
        if config is not None and names:
            raise PulseError("give a PulseConfig or its fields as keywords, not both.")
        return cls(config if config is not None else PulseConfig(**names), device=device, dtype=dtype)

    @classmethod
    def from_recipe(
        cls, path: str | Path, overrides: Iterable[str] = (), *, device=None, dtype=None
    ) -> PulseForCausalLM:
        """Fresh weights (torch's current RNG) for the model of a recipe file, with --set style overrides."""
        return cls(load_recipe(path, overrides), device=device, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device=None, dtype=None,
                        allow_unverified: bool = False) -> PulseForCausalLM:
        """Rebuild from a checkpoint or run directory alone (its stored recipe) and load its weights; a run
        gives its newest weights. A file without its checksum or recipe hash is refused unless
        allow_unverified=True."""
        source = open_source(directory, allow_unverified=allow_unverified)
        source.require_weights("from_pretrained")
        return cls.from_source(source, device=device, dtype=dtype)

    @classmethod
    def from_source(cls, source: Source, *, device=None, dtype=None) -> PulseForCausalLM:
        """The model of an opened source (pulse.api.source): its weights, or fresh ones for a recipe."""
        recipe = _check_lm(source.recipe)
        return cls(recipe, model=source.build(device=device, dtype=dtype), tokenizer=source.tokenizer)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write model.safetensors (weights + recipe metadata), recipe.json and the tokenizer's files atomically;
        returns the weights path."""
        return save_checkpoint(self.model, self.recipe, directory, tokenizer=self.tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer stored with the weights, else the one the recipe names (task.tokenizer, else bytes)."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_of(self.recipe)
        return self._tokenizer

    @property
    def reset_token_id(self) -> int | None:
        """The token where every layer starts afresh: the tokenizer's eos when the model was trained
        on packed documents with task.reset_at_eos, else None."""
        if not getattr(self.recipe.task, "reset_at_eos", False):
            return None  # no tokenizer needed: a model of another task never resets
        return reset_token(self.recipe.task, self.tokenizer)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        return self.model.init_state(batch, device=device, dtype=dtype)

    def example_input(self, batch: int, seq_len: int, *, device=None) -> Tensor:
        return self.model.example_input(batch, seq_len, device=device)

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, state: dict[str, Any] | None = None, *,
        doc_starts: Any = None,
    ) -> CausalLMOutput:
        """Logits for input_ids (b, t) continuing `state`; with labels (b, t), the loss of predicting
        labels[:, 1:] from positions :-1 (labels are shifted here, as in Hugging Face; −100 is ignored).
        Documents start where `doc_starts` says (pulse.ops.documents), by default at `reset_token_id`."""
        reset = self.reset_token_id
        if doc_starts is None and reset is not None and isinstance(input_ids, Tensor):
            doc_starts = input_ids == reset
        logits, state = self.model(input_ids, state, doc_starts=doc_starts)
        loss = None
        if labels is not None:
            loss = next_token_loss(logits, labels)
        return CausalLMOutput(loss=loss, logits=logits, state=state)

    def step(self, input_ids: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Logits (b, v) for one new token per row (b,), and the state after it (a row restarts at
        `reset_token_id`)."""
        reset = self.reset_token_id
        return self.model.step(input_ids, state, doc_starts=None if reset is None else input_ids == reset)

    def stream(
        self,
        input_ids: Tensor,
        max_new_tokens: int | None = None,
        *,
        max_length: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationStep]:
        """generate(), one GenerationStep (ids, logits, finished) at a time; see pulse.generation.stream."""
        if not isinstance(input_ids, Tensor) or input_ids.ndim != 2:
            got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise PulseError(f"input_ids must be a (batch, time) tensor of token ids, got {got}.")
        decoding = resolve_decoding(
            input_ids.shape[1], max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample,
            temperature=temperature, top_k=top_k, top_p=top_p,
        )
        if seed is not None and generator is None:
            generator = torch.Generator(device=input_ids.device).manual_seed(seed)
        new_tokens = decoding.pop("max_new_tokens")
        kwargs.setdefault("reset_token_id", self.reset_token_id)
        return stream(self.model, input_ids, new_tokens, generator=generator, **decoding, **kwargs)

    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int | None = None,
        *,
        max_length: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        do_sample: bool | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        vocab_limit: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        state: dict[str, Any] | None = None,
        streamer: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """input_ids (b, t) followed by up to max_new_tokens new ids per row: (b, t + n).

        Length: max_new_tokens (default 64, pulse.generation.DEFAULT_NEW_TOKENS, as `pulse generate`), or
        max_length = prompt + new tokens (the seed's name).
        One prefill pass over input_ids (continuing `state` if given), then one `step` per
        token carrying every layer's state. Greedy by default; sampling when do_sample=True or
        when temperature / top_k / top_p is given (as in the seed; with do_sample=False they are
        ignored with a warning). Sampling applies temperature, then top_k, then top_p, drawing from
        `generator` (or a fresh one seeded with `seed`). Rows that emit eos_token_id are filled with pad_token_id
        (default: eos) afterwards; generation stops early when every row has. Only ids below
        `vocab_limit` are ever chosen (e.g. the tokenizer's size in a larger vocabulary). `streamer`
        is called with each new column of ids (b,) as soon as it exists.
        """
        steps = self.stream(
            input_ids, max_new_tokens, max_length=max_length, temperature=temperature, top_k=top_k, top_p=top_p,
            do_sample=do_sample,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, vocab_limit=vocab_limit, seed=seed,
            generator=generator, state=state,
        )
        columns = [input_ids]
        for s in steps:
            columns.append(s.tokens.unsqueeze(1))
            if streamer is not None:
                streamer(s.tokens)
        return torch.cat(columns, dim=1)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids generation starts from: the prompt in the model's tokenizer, or its bos alone for an empty
        prompt; a PulseError when the prompt is empty and there is no bos."""
        tok = self.tokenizer
        ids = tok.encode(prompt) or ([tok.bos_id] if tok.bos_id is not None else [])
        if not ids:
            raise PulseError("the prompt is empty and this model's vocabulary has no bos token to start from; "
                             "give a prompt (--prompt TEXT).")
        return ids

    def generate_text(self, prompt: str, max_new_tokens: int | None = None, **kwargs: Any) -> str:
        """The text generated after `prompt` (the model's tokenizer; stops at eos when it has one); generate()'s
        length and decoding rules, its default number of new tokens included."""
        tok = self.tokenizer
        ids = self.prompt_ids(prompt)
        device = next(self.parameters()).device
        kwargs.setdefault("eos_token_id", tok.eos_id)
        kwargs.setdefault("vocab_limit", tok.vocab_size)
        out = self.generate(torch.tensor([ids], device=device), max_new_tokens, **kwargs)
        return tok.decode(out[0, len(ids):])


def _check_lm(recipe: RecipeBase) -> RecipeBase:
    kind = getattr(recipe.model, "kind", None)
    if kind != "lm":
        raise PulseError(
            "PulseForCausalLM needs a language-model recipe ([model] kind = \"lm\"), "
            f"but {recipe.source or 'this recipe'} has model kind `{kind}`; build it with pulse.build_model instead."
        )
    return recipe
