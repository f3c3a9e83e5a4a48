"""One storage room for the Hugging Face export directory (read and written without Transformers), one causal-LM
loss, one ignore label."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pulse
from pulse.models.lm import IGNORE, next_token_loss
from pulse.storage import hf_dir
from pulse.storage.checkpoint import unique_tensors

PACKAGE = Path(pulse.__file__).parent
VOCAB = 259


def small_lm(*, tied: bool, dtype: torch.dtype = torch.float32) -> pulse.PulseForCausalLM:
    torch.manual_seed(0)
    config = pulse.PulseConfig(vocab_size=VOCAB, hidden_size=16, num_layers=2, layout=["attention"], mlp=None,
                               tie_word_embeddings=tied)
    return pulse.PulseForCausalLM(config).to(dtype).eval()


def write(lm: pulse.PulseForCausalLM, out: Path, **kwargs) -> Path:
    """An export directory written by storage alone (no Transformers model behind it)."""
    tensors, tok = unique_tensors(lm.model), hf_dir.hf_tokenizer(lm.tokenizer)
    config = hf_dir.config_fields(lm.recipe.to_dict(), tok, tensors, lm.reset_token_id)
    return hf_dir.write_hf_dir(out, config, tensors, tok, **kwargs)


ROUND_TRIP = """
import sys
from pathlib import Path

import torch

import pulse
from pulse.storage import hf_dir
from pulse.storage.checkpoint import unique_tensors

torch.manual_seed(0)
lm = pulse.PulseForCausalLM(pulse.PulseConfig(vocab_size=259, hidden_size=16, num_layers=2, layout=["attention"],
                                              mlp=None, tie_word_embeddings=True)).eval()
tensors, tok = unique_tensors(lm.model), hf_dir.hf_tokenizer(lm.tokenizer)
out = hf_dir.write_hf_dir(Path(sys.argv[1]), hf_dir.config_fields(lm.recipe.to_dict(), tok, tensors, None), tensors,
                          tok)
config = hf_dir.read_config(out, pulse_dir=False)
recipe, weights = hf_dir.stored_recipe(out, config, "give another")
back = hf_dir.read_hf_weights(weights, config, allow_unverified=False)
assert recipe == lm.recipe.to_dict() and back.keys() == tensors.keys()
assert all(torch.equal(back[k], v) for k, v in tensors.items())
source = pulse.open_source(out)
ids = torch.randint(0, 259, (2, 9), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    torch.testing.assert_close(source.build()(ids)[0], lm(ids).logits)
print(source.origin, "transformers" in sys.modules)
"""


def test_storage_writes_and_reads_an_export_without_importing_transformers(tmp_path):
    """The export directory is storage's: written and read back (by storage, and by open_source) with Transformers
    never imported, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(tmp_path / "x")], capture_output=True, text=True,
                            timeout=300, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["hf", "False"]
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == sorted([
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "configuration_pulse.py", "modeling_pulse.py"])


def test_storage_refuses_what_the_export_reader_cannot_trust(tmp_path):
    lm = small_lm(tied=False)
    out = write(lm, tmp_path / "x")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "pulse" and config["pulse_format"] == hf_dir.FORMAT
    with pytest.raises(pulse.PulseError, match="format 2 .*Export it again"):
        hf_dir.stored_recipe(out, {**config, "pulse_format": 2}, "give another")
    with pytest.raises(pulse.PulseError, match="not a whole export. give another"):
        hf_dir.stored_recipe(out, {k: v for k, v in config.items() if k != "recipe"}, "give another")
    with pytest.raises(pulse.PulseError, match="do not match the checksum"):
        hf_dir.read_hf_weights(out / "model.safetensors", {**config, "weights_sha256": "0" * 64}, False)
    with pytest.raises(pulse.PulseError, match="not empty; pass --force"):
        write(lm, out)
    write(lm, out, force=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("x.replaced-")]


def labels_with_ignored(ids: torch.Tensor) -> torch.Tensor:
    labels = ids.clone()
    labels[0, :5] = IGNORE
    labels[1, 3] = IGNORE
    labels[1, -1] = IGNORE
    return labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_loss_for_pulse_and_transformers_with_ignored_labels(dtype):
    """PulseForCausalLM and PulseHFForCausalLM give the same loss (one function): the mean over the positions not
    labelled IGNORE, in the logits' precision (Transformers' copy cast float64 down to float32)."""
    pytest.importorskip("transformers", reason="the hf extra (pip install 'pulse[hf]') is not installed")
    from pulse.hf.modeling import hf_model

    lm = small_lm(tied=True, dtype=dtype)
    hf = hf_model(lm).eval()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    labels = labels_with_ignored(ids)
    with torch.no_grad():
        ours, theirs = lm(ids, labels=labels), hf(ids, labels=labels)
    logp = torch.log_softmax(ours.logits[:, :-1].double(), -1)
    target = labels[:, 1:]
    keep = target != IGNORE
    expected = -logp.gather(-1, target.clamp(min=0)[..., None])[..., 0][keep].mean()
    assert ours.loss.dtype == theirs.loss.dtype == dtype
    torch.testing.assert_close(theirs.loss, ours.loss, rtol=0, atol=0)
    torch.testing.assert_close(ours.loss.double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(pulse.PulseError, match="labels must have the shape of input_ids"):
        hf(ids, labels=labels[:, :-1])


def test_half_precision_logits_are_upcast_and_every_ignored_label_takes_no_part():
    logits = torch.randn(2, 6, 11, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    labels = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(1))
    loss = next_token_loss(logits, labels)
    assert loss.dtype == torch.float32
    changed = labels.clone()
    changed[0, 0] = IGNORE  # the first label is never a target (shifted away)
    changed[1, 2] = IGNORE
    kept = next_token_loss(logits, changed)
    torch.testing.assert_close(kept, torch.nn.functional.cross_entropy(  # torch's default ignore_index is IGNORE
        logits[:, :-1].float().reshape(-1, 11), changed[:, 1:].reshape(-1)))
    assert not torch.equal(kept, loss)


def imported_modules(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_storage_never_imports_transformers():
    for file in sorted((PACKAGE / "storage").rglob("*.py")):
        found = {m for m in imported_modules(file) if m.split(".")[0] == "transformers"}
        assert not found, f"{file.relative_to(PACKAGE)} imports {found}: storage reads and writes without Transformers"


MINUS_100 = re.compile(r"(?<![\w.\-])-100(?![\w.])")


def test_the_ignore_label_is_spelled_once():
    """-100 appears in pulse/ only where IGNORE is defined; everything else names the constant."""
    found = [(str(file.relative_to(PACKAGE)), line.split("#")[0].strip())
             for file in sorted(PACKAGE.rglob("*.py"))
             for line in file.read_text(encoding="utf-8").splitlines() if MINUS_100.search(line)]
    assert found == [("models/lm.py", "IGNORE = -100")]
    assert MINUS_100.search("x = -100") and not MINUS_100.search("CIFAR-100") and not MINUS_100.search("1e-100")
