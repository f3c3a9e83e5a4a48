"""PULSE models as Hugging Face Transformers models: export, AutoModelForCausalLM, parity, generate, padding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pulse
from helpers import run_cli

transformers = pytest.importorskip("transformers", reason="the hf extra (pip install 'pulse[hf]') is not installed")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from pulse.export.hf import export_hf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 259


def every_mixer_lm(kind: str) -> pulse.PulseForCausalLM:
    torch.manual_seed(0)
    config = pulse.PulseConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, layout=[kind], mlp=None,
                               tie_word_embeddings=False)
    return pulse.PulseForCausalLM(config).eval()


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory) -> tuple[pulse.PulseForCausalLM, Path]:
    torch.manual_seed(0)
    lm = pulse.PulseForCausalLM.from_recipe(ROOT / "recipes/hybrid.toml", [
        "model.dim=32", "model.depth=3", "model.mixers.pulse.chunk_size=8", "model.vocab_size=259"]).eval()
    out = tmp_path_factory.mktemp("hf") / "hybrid"
    export_hf(lm, out)
    return lm, out


@pytest.mark.parametrize("kind", pulse.registry.kinds("mixer"))
def test_every_mixer_kind_exports_with_equal_logits_loss_and_greedy_generation(kind, tmp_path):
    lm = every_mixer_lm(kind)
    export_hf(lm, tmp_path / "x")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "x").eval()
    ids = torch.randint(0, VOCAB, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = lm(ids, labels=ids), hf(ids, labels=ids)
    torch.testing.assert_close(theirs.logits, ours.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs.loss, ours.loss, rtol=1e-5, atol=1e-6)
    prompt, eos = ids[:1, :6], lm.tokenizer.eos_id
    theirs = hf.generate(prompt, max_new_tokens=8, do_sample=False)  # stops at eos, as `pulse generate` does
    ours = lm.generate(prompt, max_new_tokens=8, eos_token_id=eos)  # pads with eos after it
    assert torch.equal(theirs, ours[:, : theirs.shape[1]]) and bool((ours[:, theirs.shape[1]:] == eos).all())


def test_generate_feeds_the_prompt_once_then_one_token_per_step(hybrid):
    lm, out = hybrid
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    lengths = []
    real = hf.model.forward

    def spy(ids, state=None, **kwargs):
        lengths.append(ids.shape[1])
        return real(ids, state, **kwargs)

    hf.model.forward = spy
    prompt = torch.tensor([lm.tokenizer.encode("Hello, state")])
    hf.generate(prompt, max_new_tokens=6, do_sample=False)
    assert lengths == [prompt.shape[1]] + [1] * 5  # the recurrent state is the cache: no prefix recomputed


def test_the_export_loads_with_remote_code_and_its_tokenizer_matches(hybrid):
    lm, out = hybrid
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "pulse" and config["auto_map"]["AutoModelForCausalLM"].startswith("modeling_pulse")
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(remote).__name__ == "PulseHFForCausalLM"
    tok = AutoTokenizer.from_pretrained(out)
    text = "héllo, wörld ∑"
    assert tok(text)["input_ids"] == lm.tokenizer.encode(text) and tok.decode(tok(text)["input_ids"]) == text
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 257, 258)


def test_a_fresh_process_needs_only_import_pulse(hybrid):
    _, out = hybrid
    code = ("import pulse, sys\n"
            "print('transformers' in sys.modules)\n"  # import pulse stays free of Transformers
            "import transformers\n"
            f"m = transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
            "print(type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "False" and done.stdout.split()[-1] == "PulseHFForCausalLM", done.stdout


def test_padding_right_is_exact_and_left_or_carried_is_refused(hybrid):
    lm, out = hybrid
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        padded = hf(ids, attention_mask=mask).logits
        alone = hf(ids[1:, :8]).logits
    torch.testing.assert_close(padded[1, :8], alone[0], rtol=1e-5, atol=1e-5)
    left = torch.ones_like(ids)
    left[0, :3] = 0
    with pytest.raises(pulse.PulseError, match="pads on the left"):
        hf(ids, attention_mask=left)
    with pytest.raises(pulse.PulseError, match="recurrent state carried"):
        hf.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False)


def test_pulse_reads_the_export_back_through_every_door(hybrid, tmp_path):
    lm, out = hybrid
    back = pulse.PulseForCausalLM.from_pretrained(out)
    ids = torch.randint(0, 256, (1, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, lm(ids).logits)
    assert pulse.open_source(out).origin == "hf"
    shown = run_cli("generate", out, "--prompt", "Hello", "-n", "5")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == "Hello" + lm.generate_text("Hello", max_new_tokens=5)
    assert run_cli("summarize", out, "--json").exit_code == 0
    again = run_cli("export", out, "--format", "hf", "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    refused = run_cli("export", out, "--format", "hf", "--out", tmp_path / "again")
    assert refused.exit_code == 2 and "not empty" in refused.stderr


@pytest.mark.audit("HF export", "clean")
def test_a_damaged_or_foreign_export_is_one_clear_error(hybrid, tmp_path):
    _, out = hybrid
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    config = json.loads((bad / "config.json").read_text())
    config["pulse_format"] = 99
    (bad / "config.json").write_text(json.dumps(config))
    result = run_cli("generate", bad, "--prompt", "a")
    assert result.exit_code == 2 and "format 99" in result.stderr and "Export it again" in result.stderr
    config["pulse_format"] = 1
    config["weights_sha256"] = "0" * 64
    (bad / "config.json").write_text(json.dumps(config))
    result = run_cli("generate", bad, "--prompt", "a")
    assert result.exit_code == 2 and "do not match the checksum" in result.stderr


def test_a_run_exports_with_its_bpe_tokenizer(tmp_path):
    from pulse.data.bpe import train_bpe, write_tokenizer

    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"{i}.txt").write_text(f"document {i}: " + " ".join(f"word{(i * j) % 11}" for j in range(50)))
    write_tokenizer(train_bpe([str(corpus)], vocab_size=300, min_frequency=1), tmp_path / "tok.json")
    data = {"model": {"kind": "lm", "vocab_size": 300, "dim": 16, "depth": 1, "layout": ["attn"],
                      "mixers": {"attn": {"kind": "attention", "num_heads": 2}}},
            "task": {"kind": "text", "path": str(corpus), "tokenizer": str(tmp_path / "tok.json"), "seq_len": 16,
                     "cache_dir": str(tmp_path / "cache")},
            "train": {"steps": 1, "batch_size": 2, "eval_every": 0, "threads": 1, "device": "cpu"}}
    from test_train import write_recipe

    assert run_cli("train", write_recipe(tmp_path / "r.toml", data), "--out", tmp_path / "run", "-q").exit_code == 0
    assert run_cli("export", tmp_path / "run", "--format", "hf", "--out", tmp_path / "hf").exit_code == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = pulse.PulseForCausalLM.from_pretrained(tmp_path / "run").tokenizer
    assert tok("document 3: word1")["input_ids"] == ours.encode("document 3: word1")
    assert tok.eos_token_id == ours.eos_id == 1


def test_a_model_trained_with_reset_at_eos_exports_its_document_starts(tmp_path):
    """task.reset_at_eos travels with the export: Transformers' forward and generate start every layer
    afresh at the eos, as PULSE does, so the logits after an eos are those of a fresh sequence."""
    torch.manual_seed(0)
    lm = pulse.PulseForCausalLM.from_recipe(ROOT / "recipes/text-hybrid.toml", [
        "model.dim=32", "model.vocab_size=259", "model.mixers.pulse.chunk_size=8"]).eval()
    assert lm.reset_token_id == 257
    export_hf(lm, tmp_path / "x")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "x").eval()
    assert hf.config.reset_token_id == 257
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(2))
    ids[0, 9] = 257
    with torch.no_grad():
        ours, theirs, fresh = lm(ids).logits, hf(ids).logits, lm(ids[:, 9:]).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[:, 9:], fresh, rtol=1e-5, atol=1e-5)
    theirs = hf.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(theirs[:, 20:], lm.generate(ids[:, 9:], max_new_tokens=5)[:, 11:][:, : theirs.shape[1] - 20])


def copy_of(out: Path, tmp_path: Path, edit=None) -> Path:
    """A copy of the export `out`, its config.json dict passed through `edit` (returns nothing: edits in place)."""
    import shutil

    bad = tmp_path / "copy"
    shutil.copytree(out, bad)
    if edit is not None:
        config = json.loads((bad / "config.json").read_text())
        edit(config)
        (bad / "config.json").write_text(json.dumps(config))
    return bad


@pytest.mark.audit("HF export", "clean")
def test_transformers_refuses_damaged_weights_as_pulse_generate_does(hybrid, tmp_path):
    """The audit: one flipped byte in model.safetensors loaded through Transformers with no error (loss 5.56
    instead of 2.98) while `pulse generate DIR` refused it."""
    import struct

    bad = copy_of(hybrid[1], tmp_path)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[8 + struct.unpack("<Q", data[:8])[0] + 100] ^= 0x40  # inside the first tensor's bytes: the header is intact
    (bad / "model.safetensors").write_bytes(bytes(data))
    for remote in (False, True):
        with pytest.raises(pulse.PulseError, match=r"do not match the checksum in config.json.*Export again"):
            AutoModelForCausalLM.from_pretrained(bad, trust_remote_code=remote)
    assert run_cli("generate", bad, "--prompt", "a").exit_code == 2


@pytest.mark.parametrize("key, value, message", [
    ("depth", 4, r"missing \['stack.layers.3"),  # the audit's edit gave NaN logits
    ("dim", 48, r"shape mismatch.*embed.weight: file \(259, 32\), model \(259, 48\)"),
    ("vocab_size", 300, r"shape mismatch.*embed.weight: file \(259, 32\), model \(300, 32\)"),
])
@pytest.mark.audit("HF export", "clean")
def test_transformers_refuses_a_config_that_does_not_fit_the_weights(hybrid, tmp_path, key, value, message):
    bad = copy_of(hybrid[1], tmp_path, lambda c: c["recipe"]["model"].update({key: value}))
    with pytest.raises(pulse.PulseError, match=message) as err:
        AutoModelForCausalLM.from_pretrained(bad, trust_remote_code=True)
    assert "config.json" in str(err.value) and "export again" in str(err.value)


@pytest.mark.audit("HF export", "clean")
def test_an_export_without_its_checksum_loads_only_when_allowed(hybrid, tmp_path):
    bad = copy_of(hybrid[1], tmp_path, lambda c: c.pop("weights_sha256"))
    with pytest.raises(pulse.PulseError, match="records no weights_sha256"):
        AutoModelForCausalLM.from_pretrained(bad)
    assert type(AutoModelForCausalLM.from_pretrained(bad, allow_unverified=True)).__name__ == "PulseHFForCausalLM"


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
@pytest.mark.audit("HF export", "clean")
def test_broken_json_in_an_export_is_named_with_its_line(hybrid, tmp_path, name):
    """An invalid config.json was "not a PULSE checkpoint"; a broken tokenizer_config.json was skipped unsaid."""
    bad = copy_of(hybrid[1], tmp_path)
    text = (bad / name).read_text()
    (bad / name).write_text(text.replace("{", "{\n  oops,", 1))
    result = run_cli("generate", bad, "--prompt", "a", "-n", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output[-2000:]
    assert f"{bad / name} is not valid JSON (line 2, column 3" in " ".join(result.stderr.split()), result.stderr


@pytest.mark.parametrize("umask", [0o022, 0o077])
@pytest.mark.audit("HF export", "correct")
def test_every_file_of_an_export_has_the_mode_the_umask_gives(hybrid, tmp_path, umask):
    """model.safetensors came out 0600 whatever the umask (safetensors writes through a temporary file)."""
    import os

    old = os.umask(umask)
    try:
        export_hf(hybrid[0], tmp_path / "x")
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "x").iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask) and "model.safetensors" in modes


@pytest.mark.audit("HF export", "correct")
def test_a_vocabulary_without_bos_or_eos_declares_one_the_model_reads_as_a_newline(tmp_path):
    """A byte model at 256 ids has no special token; lm-eval needs a bos (its prefix) and an eos (its stop and
    pad). The export declares <|endoftext|> (id 256) for both, and the model reads it as the newline byte; the
    text itself encodes and decodes as before (newlines kept when special tokens are skipped), and PULSE reads
    the export with its 256 ids."""
    torch.manual_seed(0)
    lm = pulse.PulseForCausalLM.from_recipe(ROOT / "recipes/hybrid.toml", ["model.dim=32"]).eval()
    assert lm.tokenizer.vocab_size == 256 and lm.tokenizer.eos_id is None
    export_hf(lm, tmp_path / "x")
    tok = AutoTokenizer.from_pretrained(tmp_path / "x")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "x").eval()
    assert tok.bos_token_id == tok.eos_token_id == 256 and hf.config.bos_token_id == 10
    assert hf.config.eos_token_id is None  # generate() runs to max_new_tokens, as `pulse generate` does
    text = "one\ntwo Ċ"
    ids = tok(text)["input_ids"]
    assert ids == lm.tokenizer.encode(text) and tok.decode(ids, skip_special_tokens=True) == text
    with torch.no_grad():
        torch.testing.assert_close(hf(torch.tensor([[256, *ids]])).logits, lm(torch.tensor([[10, *ids]])).logits,
                                   rtol=1e-5, atol=1e-5)
    back = pulse.open_source(tmp_path / "x").tokenizer
    assert back.vocab_size == 256 and back.eos_id is None and back.encode(text) == ids
