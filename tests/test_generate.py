"""Generation with carried state: greedy equals argmax of full forward passes, prefill splits
change nothing, EOS handling, sampling controls, the tokenizer and `pulse generate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pulse
from helpers import run_cli
from pulse.contract import assert_close
from pulse.data.tokenizer import ByteTokenizer
from pulse.generation import next_tokens

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 64

# The three models the issue names, plus learned positions (positions must continue across steps).
CASES = {
    "pure-pulse": dict(layout=["pulse"], num_states=4, chunk_size=3),
    "hybrid": dict(layout=["pulse", "attention"], num_states=4, chunk_size=3),
    "transformer": dict(layout=["attention"]),
    "transformer-learned-positions": dict(
        layout=["attention"], position_embedding="learned", max_position_embeddings=32
    ),
}


def tiny_lm(case: str, seed: int = 0, **extra) -> pulse.PulseForCausalLM:
    torch.manual_seed(seed)
    # untied head: a tied one mostly predicts the input token again, which makes greedy runs repetitive
    config = pulse.PulseConfig(**{"vocab_size": VOCAB, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                  "tie_word_embeddings": False, **CASES[case], **extra})
    return pulse.PulseForCausalLM(config, dtype=torch.float64)


def prompt(batch: int = 2, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def every_mixer_lm(kind: str) -> pulse.PulseForCausalLM:
    torch.manual_seed(0)
    config = pulse.PulseConfig(
        vocab_size=VOCAB, hidden_size=32, num_layers=2, layout=[kind], mlp=None, tie_word_embeddings=False
    )
    return pulse.PulseForCausalLM(config, dtype=torch.float64)


@pytest.mark.parametrize("case", CASES)
def test_greedy_generate_equals_argmax_of_full_forward(case):
    model = tiny_lm(case)
    ids = prompt()
    out = model.generate(ids, max_new_tokens=10)
    assert out.shape == (2, 15) and torch.equal(out[:, :5], ids)
    full = model(out[:, :-1]).logits  # (b, 14, v): one pass over prompt + all generated tokens but the last
    assert torch.equal(full[:, 4:].argmax(-1), out[:, 5:])
    steps = list(model.stream(ids, 10))
    assert_close(torch.stack([s.logits for s in steps], dim=1), full[:, 4:], f"{case}: step logits vs full forward")


@pytest.mark.parametrize("kind", pulse.registry.kinds("mixer"))
def test_every_registered_mixer_generates_like_its_full_forward(kind):
    model = every_mixer_lm(kind)
    ids = prompt(length=6)
    out = model.generate(ids, max_new_tokens=7)
    full = model(out[:, :-1]).logits
    assert torch.equal(full[:, 5:].argmax(-1), out[:, 6:]), kind


@pytest.mark.parametrize("case", ["pure-pulse", "hybrid", "transformer"])
def test_prefill_split_anywhere_gives_identical_logits(case):
    model = tiny_lm(case)
    ids = prompt(length=8)
    reference = list(model.stream(ids, 6))
    for k in range(1, ids.shape[1]):
        state = model(ids[:, :k]).state
        steps = list(model.stream(ids[:, k:], 6, state=state))
        assert torch.equal(torch.stack([s.tokens for s in steps]), torch.stack([s.tokens for s in reference])), k
        assert_close(
            torch.stack([s.logits for s in steps]), torch.stack([s.logits for s in reference]), f"split at {k}"
        )
    assert model(ids).state["pos"] == 8


def test_finished_rows_stop_changing_after_eos():
    model = tiny_lm("transformer")
    ids = prompt(batch=3)
    free = model.generate(ids, max_new_tokens=12)[:, 5:]
    eos = int(free[0, 2])
    for pad in (None, VOCAB - 1):
        out = model.generate(ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=pad)[:, 5:]
        fill = eos if pad is None else pad
        for row in range(3):
            hits = (free[row] == eos).nonzero()
            end = int(hits[0]) + 1 if len(hits) else free.shape[1]
            n = min(end, out.shape[1])
            assert torch.equal(out[row, :n], free[row, :n]), row
            assert (out[row, end:] == fill).all(), row
        finished_all = all((free[r] == eos).any() for r in range(3))
        assert out.shape[1] == (max(int((free[r] == eos).nonzero()[0]) + 1 for r in range(3)) if finished_all else 12)


def test_generation_stops_when_every_row_is_done():
    model = tiny_lm("transformer")
    ids = prompt(batch=1)
    first = int(model.generate(ids, max_new_tokens=1)[0, -1])
    out = model.generate(ids, max_new_tokens=20, eos_token_id=first)
    assert out.shape == (1, 6) and int(out[0, -1]) == first


def test_sampling_is_reproducible_and_controlled():
    model = tiny_lm("hybrid")
    ids = prompt()
    a = model.generate(ids, 12, do_sample=True, seed=3)
    b = model.generate(ids, 12, do_sample=True, seed=3)
    c = model.generate(ids, 12, do_sample=True, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = model.generate(ids, 12)
    assert torch.equal(model.generate(ids, 12, do_sample=True, top_k=1, seed=5), greedy)
    assert torch.equal(model.generate(ids, 12, do_sample=True, top_p=1e-9, seed=5), greedy)
    limited = model.generate(ids, 30, do_sample=True, temperature=5.0, vocab_limit=10, seed=6)
    assert (limited[:, 5:] < 10).all()


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(400, 4)
    g = torch.Generator().manual_seed(0)
    assert set(next_tokens(logits, do_sample=True, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(next_tokens(logits, do_sample=True, top_p=0.5, generator=g).tolist()) == {0}
    assert set(next_tokens(logits, do_sample=True, top_p=0.75, generator=g).tolist()) == {0, 1}
    assert set(next_tokens(logits, do_sample=True, generator=g).tolist()) == {0, 1, 2, 3}
    assert set(next_tokens(logits, vocab_limit=1).tolist()) == {0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(max_new_tokens=-1), "max_new_tokens must be"),
        (dict(do_sample=True, temperature=0.0), "temperature must be > 0"),
        (dict(top_k=0), "top_k must be"),
        (dict(top_p=1.5), "top_p must lie"),
        (dict(eos_token_id=VOCAB), "outside the model's vocabulary"),
    ],
)
def test_bad_generation_arguments_are_pulse_errors(kwargs, message):
    model = tiny_lm("transformer")
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(pulse.PulseError, match=message):
        model.generate(prompt(), **kwargs)


def test_learned_positions_refuse_to_run_past_their_table():
    model = tiny_lm("transformer-learned-positions")
    with pytest.raises(pulse.PulseError, match="beyond the learned positions' max_seq_len"):
        model.generate(prompt(length=30), max_new_tokens=5)


def test_loss_shifts_labels_and_ignores_minus_100():
    model = tiny_lm("hybrid")
    ids = prompt(length=9)
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert_close(out.loss, expected, "shifted loss")
    masked = ids.clone()
    masked[:, :5] = -100
    partial = model(ids, labels=masked).loss
    expected = torch.nn.functional.cross_entropy(out.logits[:, 4:-1].reshape(-1, VOCAB), ids[:, 5:].reshape(-1))
    assert_close(partial, expected, "loss with ignored labels")
    out.loss.backward()
    with pytest.raises(pulse.PulseError, match="labels must have the shape"):
        model(ids, labels=ids[:, :3])


def test_byte_tokenizer_round_trips_any_text():
    tok = ByteTokenizer()
    text = "héllo, wörld — 你好 🙂\n\ttabs"
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id == 256 and ids[-1] == tok.eos_id == 257 and max(ids[1:-1]) < 256
    assert tok.decode(ids) == text
    decoder = tok.stream_decoder()
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == text
    batch, mask = tok.batch(["ab", "abcd"])
    assert batch.tolist() == [[97, 98, 258, 258], [97, 98, 99, 100]] and mask.sum().item() == 6
    assert ByteTokenizer.for_vocab(256).eos_id is None and ByteTokenizer.for_vocab(8192).eos_id == 257
    with pytest.raises(pulse.PulseError, match="set model.vocab_size = 259"):
        ByteTokenizer.for_vocab(100)
    assert pulse.recipe_from_dict({"model": {"from": "transformer-small"}}).model.tokenizer == "bytes"


def test_generate_text_decodes_the_continuation():
    model = tiny_lm("transformer", vocab_size=259)
    text = model.generate_text("Hi", 8, do_sample=True, temperature=3.0, seed=0)
    ids = model.generate(torch.tensor([list(b"Hi")]), 8, do_sample=True, temperature=3.0, seed=0, eos_token_id=257,
                         vocab_limit=259)
    assert text == model.tokenizer.decode(ids[0, 2:]) and text


def test_cli_generate_from_a_recipe_says_the_weights_are_fresh():
    result = run_cli("generate", ROOT / "recipes/transformer.toml", "--prompt", "Hello", "--max-new-tokens", "5",
                     "--set", "model.dim=32", "--set", "model.depth=1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Hello") and "freshly initialized" in " ".join(result.stderr.split())


def test_cli_generate_from_a_checkpoint_streams_the_same_text(tmp_path):
    build = run_cli("build", ROOT / "recipes/transformer.toml", "--set", "model.dim=32", "--set", "model.depth=1",
                    "--out", tmp_path / "run")
    assert build.exit_code == 0, build.output
    plain = run_cli("generate", tmp_path / "run", "--prompt", "abc", "-n", "12")
    streamed = run_cli("generate", tmp_path / "run", "--prompt", "abc", "-n", "12", "--stream")
    assert plain.exit_code == streamed.exit_code == 0, plain.output + streamed.output
    assert plain.stdout == streamed.stdout and plain.stdout.startswith("abc")
    assert "freshly" not in plain.stderr
    model = pulse.PulseForCausalLM.from_pretrained(tmp_path / "run")
    ids = torch.tensor([list(b"abc")])
    expected = model.tokenizer.decode(model.generate(ids, 12)[0])
    assert plain.stdout == expected + "\n"
    bad = run_cli("generate", tmp_path / "run", "--prompt", "abc", "--top-p", "0")
    assert bad.exit_code == 2 and "top_p must lie" in bad.stderr


# language models over text (a vocabulary of bytes or more); bAbI's word-level models read no text
LM_RECIPES = [p for p in sorted((ROOT / "recipes").glob("*.toml"))
              if pulse.load_recipe(p).model.kind == "lm" and pulse.load_recipe(p).model.vocab_size >= 256]


@pytest.mark.parametrize("path", LM_RECIPES, ids=lambda p: p.name)
def test_every_lm_recipe_builds_a_checkpoint_that_generates(tmp_path, path):
    build = run_cli("build", path, "--out", tmp_path / "run", "--depth", "0")
    assert build.exit_code == 0, build.output
    result = run_cli("generate", tmp_path / "run", "--prompt", "Hello", "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Hello")


def test_long_generation_says_how_far_it_is_and_absurd_lengths_are_refused(tmp_path, monkeypatch):
    from pulse.cli import generate as generate_cli

    monkeypatch.setattr(generate_cli, "PROGRESS_EVERY", 0.0)
    shown = run_cli("generate", ROOT / "recipes/hybrid.toml", "--set", "model.dim=32", "--set", "model.depth=3",
                    "--prompt", "a", "-n", "3")
    assert shown.exit_code == 0 and "1/3 tokens" in shown.stderr and "--stream" in shown.stderr, shown.output
    refused = run_cli("generate", ROOT / "recipes/hybrid.toml", "-n", str(10**12))
    assert refused.exit_code == 2 and "1000000" in refused.output
