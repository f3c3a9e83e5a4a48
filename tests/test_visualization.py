"""pulse.visualization: capture changes nothing, records the right things, and every figure is drawn and labelled."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pulse
from helpers import run_cli
from pulse.blocks.layers.attention import CausalSelfAttention
from pulse.blocks.pulse.chunked import ChunkRecurrentMixer
from pulse.visualization import AttentionVisualizer, StateVisualizer, capture

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
MIXED = """
[model]
kind = "lm"
vocab_size = 256
dim = 32
depth = 4
layout = ["p", "m", "a", "attn"]

[model.mixers.p]
kind = "pulse"
num_slots = 6
chunk_size = 4
local = "conv"

[model.mixers.m]
kind = "pulse_managed"
max_slots = 8
init_slots = 5
chunk_size = 4
gate = "lstm"

[model.mixers.a]
kind = "pulse_adaptive"
min_slots = 2
max_slots = 8
chunk_size = 4
gate = "mingru"

[model.mixers.attn]
kind = "attention"
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> pulse.PulseForCausalLM:
    path = tmp_path_factory.mktemp("recipe") / "mixed.toml"
    path.write_text(MIXED)
    torch.manual_seed(0)
    return pulse.PulseForCausalLM.from_recipe(path).eval()


def transformer() -> pulse.PulseForCausalLM:
    return pulse.PulseForCausalLM.from_recipe(
        ROOT / "recipes/transformer.toml", ["model.dim=32", "model.depth=2"]
    ).eval()


def ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (2, n), generator=torch.Generator().manual_seed(seed))


def test_agg_backend():
    assert matplotlib.get_backend().lower() == "agg"


@given(n=st.integers(1, 23), split=st.integers(0, 22))
def test_capture_changes_no_output_and_leaves_nothing_behind(mixed, n, split):
    x = ids(n)
    with torch.no_grad():
        plain = mixed(x).logits
        with capture(mixed) as cap:
            watched = mixed(x).logits
            # a split forward (state carried) is recorded too and still exact
            k = min(split, n - 1)
            if k:
                first = mixed(x[:, :k])
                mixed(x[:, k:], state=first.state)
    assert torch.equal(plain, watched)
    assert cap.records, "nothing was recorded"
    for _, module in mixed.named_modules():
        assert "capture_sink" not in vars(module)


def test_capture_off_computes_no_probabilities(mixed, monkeypatch):
    calls = []
    real = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        mixed(ids(13))
    assert not calls, "an uncaptured forward computed attention probabilities"
    with torch.no_grad(), capture(mixed):
        mixed(ids(13))
    assert calls


def test_attention_probabilities_are_what_sdpa_mixed():
    torch.manual_seed(0)
    layer = CausalSelfAttention(16, num_heads=2).eval()
    x = torch.randn(2, 9, 16)
    with capture(torch.nn.Sequential(layer)) as cap:
        y, state = layer(x)
    probs = cap.get("0", "attention")[0]  # (b, h, t, t)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2, 9), atol=1e-6)
    assert torch.all(probs.triu(1) == 0), "a token attended to the future"
    # the probabilities mix the cached values into the same output SDPA gave
    mixed = (probs @ state["v"]).transpose(1, 2).reshape(2, 9, 16)
    assert torch.allclose(layer.out(mixed), y, atol=1e-5)


def test_slot_records_match_the_state_and_weights_are_distributions(mixed):
    x = ids(18)
    with torch.no_grad(), capture(mixed) as cap:
        out = mixed(x)
    for i, layer in enumerate(mixed.model.layers):
        if not isinstance(layer.mixer, ChunkRecurrentMixer):
            continue
        path = f"model.stack.layers.{i}.mixer"
        (slots,) = cap.get(path, "slots")
        assert slots.shape[:2] == (2, math.ceil(18 / 4))  # one view per chunk read
        init, _ = layer.mixer.bank()
        assert torch.allclose(slots[:, 0], layer.mixer.propagator.communicate(init.expand(2, -1, -1))) \
            or torch.allclose(slots[:, 0], init.expand(2, -1, -1))
        route = torch.cat([r if r.ndim == 5 else r.unsqueeze(1) for r in cap.get(path, "route")], dim=1)
        assert route.shape[1] == 18 // 4 and torch.allclose(route.sum(-1), torch.ones_like(route.sum(-1)), atol=1e-5)
        (read,) = cap.get(path, "read")
        assert read.shape[:3] == (2, 4, 18) and torch.all(read.sum(-1) <= 1 + 1e-5)
        if layer.mixer.local == "conv":
            assert torch.allclose(read.sum(-1), torch.ones_like(read.sum(-1)), atol=1e-5)
        if layer.mixer.allocator is not None:
            (budget,) = cap.get(path, "budget")
            assert budget.shape == (2, math.ceil(18 / 4))
        if layer.mixer.gate != "mingru":
            assert out.state["layers"][i]["slots"]["h"].shape == slots[:, 0].shape


def test_state_figures_are_drawn_and_labelled(mixed, tmp_path):
    viz = StateVisualizer(mixed)
    prompt = "Slots, chunk by chunk!"
    drawn = {
        "states.png": viz.plot_state_dynamics(prompt, save_path=tmp_path / "states.png"),
        "similarity.png": viz.plot_state_similarity(viz.states(prompt), save_path=tmp_path / "similarity.png"),
        "routing.png": viz.plot_routing(prompt, save_path=tmp_path / "routing.png"),
        "allocation.png": viz.plot_slot_allocation(prompt, save_path=tmp_path / "allocation.png"),
    }
    for name, fig in drawn.items():
        assert (tmp_path / name).read_bytes()[:8] == PNG
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>" or not ax.axison:
                continue
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), f"{name}: an unlabelled panel"
    assert len([a for a in drawn["states.png"].axes if a.get_label() != "<colorbar>"]) == 3 * 3  # 3 slot layers
    allocation = [a.get_title() for a in drawn["allocation.png"].axes]
    assert any("pulse_managed" in t for t in allocation) and any("pulse_adaptive" in t for t in allocation)
    routing = drawn["routing.png"].axes[0]
    assert [t.get_text() for t in routing.get_xticklabels()][:5] == ["S", "l", "o", "t", "s"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_similarity_accepts_tensors_and_rejects_bad_shapes(mixed):
    viz = StateVisualizer(mixed)
    bank = torch.randn(5, 8)
    fig = viz.plot_state_similarity(bank)
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (5, 5) and abs(float(image[0, 0]) - 1) < 1e-6
    assert len(
        [a for a in viz.plot_state_similarity([bank, torch.randn(2, 3, 8)]).axes if a.get_label() != "<colorbar>"]
    ) == 2
    with pytest.raises(pulse.PulseError, match="slots"):
        viz.plot_state_similarity(torch.randn(8))


def test_state_plots_need_pulse_layers_and_say_what_the_model_has():
    with pytest.raises(pulse.PulseError, match=r"attention ×2"):
        StateVisualizer(transformer())
    viz = StateVisualizer(
        pulse.PulseForCausalLM.from_recipe(ROOT / "recipes/pulse.toml", ["model.dim=32", "model.depth=1"])
    )
    with pytest.raises(pulse.PulseError, match="pulse_managed"):
        viz.plot_slot_allocation("a prompt")
    with pytest.raises(pulse.PulseError, match="shorter than one chunk"):
        viz.plot_routing("short")


def test_attention_heatmap_labels_and_errors():
    viz = AttentionVisualizer(transformer())
    att = torch.softmax(torch.randn(3, 3).masked_fill(torch.ones(3, 3).triu(1).bool(), float("-inf")), -1)
    fig = viz.plot_attention_heatmap(att, tokens=["a", "b", "c"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() and ax.get_ylabel() and fig._suptitle.get_text()
    assert len(
        [a for a in viz.plot_attention_heatmap(torch.rand(1, 2, 4, 4)).axes if a.get_label() != "<colorbar>"]
    ) == 2
    with pytest.raises(pulse.PulseError, match="one label per query"):
        viz.plot_attention_heatmap(att, tokens=["a"])
    with pytest.raises(pulse.PulseError, match="queries"):
        viz.plot_attention_heatmap(torch.rand(4))


def test_attention_report_has_a_png_per_layer_and_head(mixed, tmp_path):
    index = AttentionVisualizer(mixed).create_attention_report("Hello, report", save_dir=tmp_path / "report")
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert len(pngs) == 4 * 4  # 4 layers (3 slot layers + attention) × 4 heads
    page = index.read_text()
    for name in pngs:
        assert f"src='{name}'" in page
    assert "Hello, report" in page and "token → slots" in page and "token → tokens" in page


def test_cli_viz_writes_figures_and_rejects_bad_input(tmp_path):
    out = tmp_path / "viz"
    result = run_cli("viz", ROOT / "recipes/hybrid.toml", "--prompt", "Hello PULSE, chunk by chunk by chunk.",
                     "--out", out, "--set", "model.dim=32", "--set", "model.depth=3",
                     "--set", "model.mixers.pulse.chunk_size=8")
    assert result.exit_code == 0, result.output
    for name in ("states.png", "similarity.png", "routing.png", "attention/index.html", "attention/layer2_head0.png"):
        assert (out / name).is_file(), name
    missing = run_cli("viz", tmp_path / "no-such-run", "--prompt", "x", "--out", out)
    assert missing.exit_code == 2 and "no such file or directory" in missing.output
    states = run_cli("viz", ROOT / "recipes/transformer.toml", "--prompt", "x", "--out", out, "--only", "states",
                     "--set", "model.dim=32", "--set", "model.depth=1")
    assert states.exit_code == 2 and "no PULSE slot layers" in states.output and "attention ×1" in states.output


def test_delta_slots_are_plotted_from_the_bank_each_chunk_started_from(tmp_path):
    lm = pulse.PulseForCausalLM.from_recipe(ROOT / "recipes/mqar-pulse-delta.toml", [
        "model.vocab_size=256", "model.dim=16", "model.mixers.pulse.num_slots=5", "model.mixers.pulse.slot_dim=8",
        "model.mixers.pulse.chunk_size=4"]).eval()
    x = ids(10)
    plain, _ = lm.model(x)
    with capture(lm.model) as cap:
        watched, state = lm.model(x)
    torch.testing.assert_close(watched, plain)  # the chunk-at-a-time forward gives the same outputs
    _, after4 = lm.model(x[:, :4])
    for index in range(2):
        banks = cap.get(f"stack.layers.{index}.mixer", "slots")[0]
        assert banks.shape == (2, 3, 5, 8)  # 3 chunks of 4 (the last partial), 5 slots of width 8
        assert not banks[:, 0].any()  # every sequence starts from an empty bank
        # chunk 1 started from the bank the first 4 tokens left, heads side by side
        torch.testing.assert_close(banks[:, 1], lm.model.layers[index].mixer.slots(after4["layers"][index]))
    viz = StateVisualizer(lm)
    prompt = "Slots written by the delta rule!"
    fig = viz.plot_state_dynamics(prompt, save_path=tmp_path / "states.png")
    titles = [a.get_title() for a in fig.axes]
    assert any("the bank starts empty" in t for t in titles) and any("(pulse_delta)" in t for t in titles)
    final = viz.states(prompt)
    assert set(final) == {"layer 0 (pulse_delta)", "layer 1 (pulse_delta)"}
    assert final["layer 0 (pulse_delta)"].shape == (5, 8)
    viz.plot_state_similarity(final, save_path=tmp_path / "similarity.png")
    with pytest.raises(pulse.PulseError, match="TokenToStateRouter"):
        viz.plot_routing(prompt)
    shown = run_cli("viz", ROOT / "recipes/mqar-pulse-delta.toml", "--prompt", prompt, "--out", tmp_path / "cli",
                    "--only", "states")
    assert shown.exit_code == 0, shown.stderr
    assert (tmp_path / "cli/states.png").read_bytes()[:8] == PNG and "skipped routing.png" in shown.stderr
