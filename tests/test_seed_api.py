"""The seed's documented Python API, run as written (sizes shrink only in depth)."""

from __future__ import annotations

import warnings

import pytest
import torch

import pulse
from pulse import PulseConfig, PulseForCausalLM, SequencePulse, StatePropagator


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = PulseConfig(vocab_size=259, hidden_size=64, num_layers=2, num_states=8, num_heads=4, chunk_size=16)
    return PulseForCausalLM(config).eval()


def test_outputs_are_read_by_key_and_attribute(model):
    input_ids = torch.randint(0, 256, (2, 24))
    labels = input_ids.clone()
    outputs = model(input_ids, labels=labels)
    loss = outputs["loss"]
    assert loss is outputs.loss and loss.ndim == 0 and torch.isfinite(loss)
    assert "loss" in outputs and "logits" in outputs
    first, logits, state = outputs  # unpacking in field order: loss, logits, state
    assert first is loss and logits.shape == (2, 24, 259) and state is outputs.state
    assert outputs[1] is logits
    assert "loss" not in model(input_ids)  # no labels: no loss field, as in Hugging Face


def test_generate_with_max_length_and_temperature_samples_as_the_seed_does(model):
    input_ids = torch.randint(0, 256, (1, 30))
    a = model.generate(input_ids[:, :10], max_length=100, temperature=0.8, top_k=50, seed=1)
    b = model.generate(input_ids[:, :10], max_length=100, temperature=0.8, top_k=50, seed=2)
    assert a.shape == (1, 100) and torch.equal(a[:, :10], input_ids[:, :10])
    assert not torch.equal(a, b), "temperature/top_k without do_sample sample (the seed's meaning)"
    greedy = model.generate(input_ids[:, :10], max_length=40)
    assert torch.equal(greedy, model.generate(input_ids[:, :10], max_new_tokens=30)), "greedy by default"


def test_settings_that_cannot_apply_are_never_silently_ignored(model):
    ids = torch.randint(0, 256, (1, 5))
    with pytest.warns(UserWarning, match="ignored: do_sample=False"):
        model.generate(ids, max_new_tokens=2, do_sample=False, top_p=0.9)
    with pytest.raises(pulse.PulseError, match="not both"):
        model.generate(ids, max_new_tokens=2, max_length=10)
    with pytest.raises(pulse.PulseError, match="counts the prompt"):
        model.generate(ids, max_length=3)


def test_sequence_pulse_returns_a_tensor():
    model = SequencePulse(input_dim=64, state_dim=128, num_states=16, output_dim=10, output_mode="last")
    x = torch.randn(32, 20, 64)
    out = model(x)
    assert out.shape == torch.Size([32, 10])
    y, state = model(x[:, :12], return_state=True)
    y2, _ = model(x[:, 12:], state=state, return_state=True)
    torch.testing.assert_close(y2, out, rtol=1e-4, atol=1e-5)


def test_simple_pulse_returns_a_tensor():
    model = pulse.SimplePulse(input_dim=16, state_dim=32, num_states=4, output_dim=3, gate_type="lstm")
    assert model(torch.randn(5, 16)).shape == (5, 3)
    assert model.slot_dim == 32 and model.num_slots == 4 and model.propagator.gate == "lstm"


@pytest.mark.parametrize("gate_type", ["lstm", "gru", "mingru"])
def test_state_propagator_with_plain_tensors(gate_type):
    propagator = StatePropagator(state_dim=128, gate_type=gate_type)
    prev_state, new_input = torch.randn(4, 16, 128), torch.randn(4, 16, 128)
    out = propagator(prev_state, new_input)
    h = out[0] if gate_type == "lstm" else out
    assert h.shape == (4, 16, 128)
    if gate_type == "lstm":  # a plain tensor state is h with a zero cell, as a fresh LSTM
        again = propagator((prev_state, torch.zeros_like(prev_state)), new_input)
        torch.testing.assert_close(out[1], again[1])


def test_state_propagator_shape_mistakes_are_pulse_errors():
    propagator = StatePropagator(state_dim=32, gate_type="gru")
    with pytest.raises(pulse.PulseError, match="needs slots of shape"):
        propagator(torch.randn(2, 4, 16), torch.randn(2, 4, 32))
    with pytest.raises(pulse.PulseError, match="inputs must have shape"):
        propagator(torch.randn(2, 4, 32), torch.randn(2, 5, 32))
    with pytest.raises(pulse.PulseError, match="disagree"):
        StatePropagator(32, state_dim=64)


def test_seed_names_and_library_names_build_the_same_config():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seed = PulseConfig(hidden_size=32, num_layers=2, num_states=4, state_dim=32, gate_type="mingru", num_heads=2)
    table = seed.to_model_dict()["mixers"]["pulse"]
    assert table == {"kind": "pulse", "num_heads": 2, "num_slots": 4, "slot_dim": 32, "gate": "mingru"}
    assert seed.to_model_dict()["positions"] is None  # no attention layer, so no rotary
