"""Autoregressive generation with carried state: one prefill pass, then one `step` per token.

Works with any language model that has `forward(ids, state) -> (logits, state)` and
`step(ids_t, state) -> (logits, state)` (pulse.models.lm.LanguageModel). The prefix
is never re-run and positions continue from the state, so a token costs what one
`step` costs: O(1) for recurrent mixers, O(context) for attention's KV cache.

# b batch · t time · v vocab
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pulse.errors import PulseError


@dataclass
class GenerationStep:
    """One generated position: the chosen ids (b,), the logits they came from (b, v), and which rows are done."""

    tokens: Tensor
    logits: Tensor
    finished: Tensor


def check_sampling(
    *, max_new_tokens: int, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    if max_new_tokens < 0:
        raise PulseError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}.")
    if do_sample and not temperature > 0:
        raise PulseError(
            f"temperature must be > 0 when sampling, got {temperature}; use greedy decoding for temperature 0."
        )
    if top_k is not None and top_k < 1:
        raise PulseError(f"top_k must be ≥ 1, got {top_k}; omit it to sample from the whole vocabulary.")
    if top_p is not None and not 0 < top_p <= 1:
        raise PulseError(f"top_p must lie in (0, 1], got {top_p}.")


def next_tokens(
    logits: Tensor,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    vocab_limit: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one id per row from logits (b, v): argmax, or a sample after temperature, top-k and top-p."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits.clone()
        logits[:, vocab_limit:] = float("-inf")
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token once the mass before it already reaches top_p; the most likely token always stays
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def stream(
    lm: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    state: Any = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    vocab_limit: int | None = None,
    generator: torch.Generator | None = None,
    reset_token_id: int | None = None,
) -> Iterator[GenerationStep]:
    """Yield up to `max_new_tokens` GenerationSteps after prefilling `input_ids` (b, t) on top of `state`.

    A row that has produced `eos_token_id` is finished: it keeps being stepped with the
    rest of the batch but its ids are `pad_token_id` (default: eos) from then on. The
    stream ends early once every row is finished. With `reset_token_id` (a model trained with
    task.reset_at_eos: the eos) every layer starts afresh at that token, in the prompt or generated,
    as the model saw documents in training.
    """
    check_sampling(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p
    )
    vocab = getattr(lm, "vocab_size", None)
    for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None and vocab is not None and not 0 <= value < vocab:
            raise PulseError(f"{name} {value} is outside the model's vocabulary 0..{vocab - 1}.")
    if max_new_tokens == 0:
        return
    fill = pad_token_id if pad_token_id is not None else eos_token_id
    with torch.no_grad():
        if reset_token_id is None:
            logits, state = lm(input_ids, state)
        else:
            logits, state = lm(input_ids, state, doc_starts=input_ids == reset_token_id)
        logits = logits[:, -1]  # (b, v)
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for i in range(max_new_tokens):
            tokens = next_tokens(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                 vocab_limit=vocab_limit, generator=generator)
            if eos_token_id is not None:
                tokens = torch.where(finished, torch.full_like(tokens, fill), tokens)
                finished = finished | (tokens == eos_token_id)
            yield GenerationStep(tokens, logits, finished.clone())
            if i + 1 == max_new_tokens or bool(finished.all()):
                return
            if reset_token_id is None:
                logits, state = lm.step(tokens, state)
            else:
                logits, state = lm.step(tokens, state, doc_starts=tokens == reset_token_id)


_warned: set[str] = set()
DEFAULT_NEW_TOKENS = 64  # new tokens when neither max_new_tokens nor max_length is given: generate() and the CLI


def resolve_decoding(
    prompt_len: int | None,
    *,
    max_new_tokens: int | None,
    max_length: int | None,
    do_sample: bool | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    default_new_tokens: int = DEFAULT_NEW_TOKENS,
) -> dict[str, Any]:
    """The one decoding rule of the Python API and the CLI, checked here (before any token is generated).

    Length: `max_new_tokens`, or `max_length` = prompt + new tokens (the seed's name; equal to the prompt: none
    new); not both; neither: `default_new_tokens`.
    Strategy: greedy by default; sampling when `do_sample=True`, or when temperature, top_k or
    top_p is given without `do_sample` (the seed's meaning). With `do_sample=False` given
    explicitly those settings cannot apply: a warning says so, once per process.
    With `prompt_len=None` (the prompt not read yet) everything but max_length against the prompt is checked.
    """
    if max_new_tokens is not None and max_length is not None:
        raise PulseError(f"max_length ({max_length}) and max_new_tokens ({max_new_tokens}) both set the length; give "
                         "one, not both: max_length counts the prompt's tokens, max_new_tokens only the new ones.")
    if max_length is not None:
        if prompt_len is None:
            prompt_len = 0
        elif max_length < prompt_len:
            raise PulseError(
                f"max_length ({max_length}) counts the prompt ({prompt_len} tokens) too, so it must be ≥ {prompt_len}; "
                f"or give max_new_tokens."
            )
        max_new_tokens = max_length - prompt_len
    if max_new_tokens is None:
        max_new_tokens = default_new_tokens
    given = [n for n, v in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p)) if v is not None]
    if do_sample is None:
        do_sample = bool(given)
    elif not do_sample and given:
        key = ",".join(given)
        if key not in _warned:
            _warned.add(key)
            warnings.warn(f"{', '.join(given)} ignored: do_sample=False decodes greedily; drop do_sample to sample.",
                          UserWarning, stacklevel=3)
    decoding = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "temperature": 1.0 if temperature is None else temperature,
        "top_k": top_k,
        "top_p": top_p,
    }
    check_sampling(**decoding)
    return decoding
