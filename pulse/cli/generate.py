"""`pulse generate`: text from a checkpoint (or a recipe's fresh weights), streamed as it comes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from pulse.cli.app import app
from pulse.cli.common import SetOption, UnverifiedOption, err_console, handle_errors, open_lm
from pulse.generation import DEFAULT_NEW_TOKENS, resolve_decoding

MAX_NEW_TOKENS = 1_000_000
PROGRESS_EVERY = 5.0  # seconds between progress lines when the text is printed at the end


@app.command(aliases=("--model",))
@handle_errors
def generate(
    source: Annotated[
        Path,
        typer.Argument(
            help="A run or checkpoint directory (or .safetensors file), or a recipe (.toml) for fresh weights."
        ),
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue.")] = "",
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", "-n", min=0, max=MAX_NEW_TOKENS,
                                                       help=f"Tokens to generate at most (default "
                                                            f"{DEFAULT_NEW_TOKENS}, as in Python's generate(); up to "
                                                            "1,000,000: longer output belongs in a script calling "
                                                            "generate()).")
                              ] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", min=1, max=MAX_NEW_TOKENS,
                                                   help="Total tokens, the prompt's included (the original PULSE "
                                                        "meaning, and Hugging Face's); instead of --max-new-tokens.")
                          ] = None,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample", help="Sample instead of greedy decoding (implied by --temperature, --top-k, --top-p)."
        ),
    ] = False,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature (> 0; implies --sample; default 1 when sampling).")
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", min=1, help="Sample only among the k most likely tokens (implies --sample)."),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option("--top-p", min=0.0, max=1.0,
                     help="Sample from the smallest set of tokens with this much probability (implies --sample)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling (and for fresh weights from a recipe).")] = 0,
    stream: Annotated[bool, typer.Option("--stream", help="Print each token as soon as it is generated.")] = False,
    set_: SetOption = None,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """Continue a prompt, one `step` per token with every layer's state carried (O(1) per token for PULSE layers).

    Greedy by default, as in Python's generate(); --sample, --temperature, --top-k or
    --top-p samples (seeded by --seed), again as in Python: the length and decoding settings are
    read and checked by the library's one rule (pulse.generation.resolve_decoding).
    """
    import torch

    settings = {"do_sample": True if sample else None, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    resolve_decoding(None, max_new_tokens=max_new_tokens, max_length=max_length, **settings)  # before loading
    model = open_lm(source, set_, seed, allow_unverified)
    tok = model.tokenizer
    ids = model.prompt_ids(prompt)
    # max_length against the prompt, before the prompt is printed; the total is for the progress line
    max_new_tokens = resolve_decoding(len(ids), max_new_tokens=max_new_tokens, max_length=max_length,
                                      **settings)["max_new_tokens"]
    steps = model.stream(torch.tensor([ids]), max_new_tokens, **settings, eos_token_id=tok.eos_id,
                         vocab_limit=tok.vocab_size, seed=seed)
    decoder = tok.stream_decoder()
    pieces: list[str] = []
    count = 0
    start = time.perf_counter()
    sys.stdout.write(prompt)
    sys.stdout.flush()
    said = start
    for s in steps:
        token = int(s.tokens[0])
        if token == tok.eos_id:
            break
        count += 1
        if not stream and time.perf_counter() - said > PROGRESS_EVERY:  # long output: say how far it is
            said = time.perf_counter()
            err_console.print(f"[dim]{count:,}/{max_new_tokens:,} tokens, {count / (said - start):.0f} tokens/s; "
                              "--stream prints them as they come[/]", highlight=False)
        piece = decoder.push(token)
        if stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        else:
            pieces.append(piece)
    pieces.append(decoder.flush())
    elapsed = time.perf_counter() - start
    sys.stdout.write("".join(pieces if not stream else pieces[-1:]) + "\n")
    sys.stdout.flush()
    rate = f" · {1000 * elapsed / count:.1f} ms/token incl. the {len(ids)}-token prefill" if count else ""
    err_console.print(f"[dim]{count} new tokens in {elapsed:.2f} s{rate}[/]", highlight=False)
