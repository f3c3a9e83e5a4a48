"""The PULSE `delta` gate: slots written by the delta rule (pulse/blocks/pulse/delta_slots.py).

The block contract (shape, causal, split, step, batch, gradient, param formula) is covered by
tests/test_mixer_properties.py as `pulse:gate=delta`, and the chunkwise op against its per-token
reference by tests/test_recall_mixers.py; this file holds what is particular to the slot bank.
"""

from __future__ import annotations

import pytest
import torch

import pulse
from pulse.blocks.pulse.delta_slots import DeltaSlotLayer
from pulse.errors import PulseError

F64 = torch.float64


def layer(**kwargs) -> DeltaSlotLayer:
    torch.manual_seed(0)
    m = pulse.build_mixer("pulse", 16, gate="delta", num_slots=8, num_heads=2, dtype=F64, **kwargs)
    assert isinstance(m, DeltaSlotLayer)
    return m


def test_the_state_is_the_slot_bank_and_every_sequence_starts_empty():
    m = layer()
    state = m.init_state(3)
    assert state["kv"].shape == (3, 2, 8, 8)  # (b, h, s, e): slot i of head j is kv[:, j, i]
    assert not state["kv"].any()
    x = torch.randn(3, 5, 16, dtype=F64)
    _, state = m(x)
    assert state["kv"].abs().sum() > 0  # the tokens wrote into it


def test_a_written_value_is_read_back_under_its_address():
    """One head, one-hot addresses: token 1 writes v at slot 3 (β = 1, no decay); token 2 (β = 0) reads slot 3."""
    from pulse.ops.delta_rule import chunk_delta_rule

    s, e = 8, 4
    addr = torch.zeros(1, 1, 3, s, dtype=F64)
    addr[0, 0, 1, 3] = addr[0, 0, 2, 3] = 1.0
    v = torch.randn(1, 1, 3, e, dtype=F64)
    old = torch.randn(1, 1, s, e, dtype=F64)  # what the bank held before
    out, bank = chunk_delta_rule(addr, addr, v, torch.tensor([[[1.0, 1.0, 0.0]]], dtype=F64), None, old, chunk_size=2)
    torch.testing.assert_close(out[0, 0, 2], v[0, 0, 1])  # the old content of slot 3 is replaced, not blended
    torch.testing.assert_close(bank[0, 0, 3], v[0, 0, 1])
    torch.testing.assert_close(bank[0, 0, :3], old[0, 0, :3])  # other slots untouched


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_outputs_do_not_depend_on_the_chunk_size(chunk):
    x = torch.randn(2, 23, 16, dtype=F64)
    torch.testing.assert_close(layer(chunk_size=chunk)(x)[0], layer(chunk_size=16)(x)[0])


def test_spec_refuses_what_the_delta_gate_does_not_have():
    with pytest.raises(PulseError, match="communication = true cannot apply"):
        pulse.build_mixer("pulse", 16, gate="delta", communication=True)
    with pytest.raises(PulseError, match='local = "attention" cannot apply.*local=conv'):
        pulse.build_mixer("pulse", 16, gate="delta", local="attention")
    # what the delta path is anyway may be said: a recipe written for gru switches with --set
    assert isinstance(pulse.build_mixer("pulse", 16, gate="delta", local="conv", communication=False), DeltaSlotLayer)
    with pytest.raises(PulseError, match="conv_size ≥ 2"):
        pulse.build_mixer("pulse", 16, gate="delta", conv_size=1)
    with pytest.raises(PulseError, match="gate"):
        pulse.build_mixer("pulse_managed", 16, gate="delta")  # the managed/adaptive banks keep gated blends
    with pytest.raises(PulseError, match="must divide slot_dim"):
        DeltaSlotLayer(16, num_heads=3, device="meta")


@pytest.mark.parametrize("kind", ["pulse:gate=delta", "gated_deltanet", "deltanet"])
def test_a_foreign_state_is_a_clear_error(kind):
    name, _, gate = kind.partition(":gate=")
    m = pulse.build_mixer(name, 16, num_heads=2, dtype=F64, **({"gate": gate} if gate else {}))
    x = torch.randn(2, 4, 16, dtype=F64)
    with pytest.raises(PulseError, match="does not fit a batch of 2"):
        m(x, m.init_state(3))
    with pytest.raises(PulseError, match="does not fit"):
        m(x, {"kv": torch.zeros(1)})
    with pytest.raises(PulseError, match="does not fit a batch of 2"):
        m.step(x[:, 0], m.init_state(1))


def test_decay_rates_are_never_weight_decayed():
    from pulse.specs.run import TrainSpec
    from pulse.train.optim import make_optimizer

    recipe = pulse.recipe_from_dict({"model": {"dim": 16, "depth": 2, "layout": ["p"], "mixers": {
        "p": {"kind": "pulse", "gate": "delta", "num_heads": 2}}}})
    model = pulse.build_model(recipe)
    opt = make_optimizer(model, TrainSpec(weight_decay=0.1, no_decay=[]))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    kept = [getattr(layer.mixer, name) for layer in model.layers for name in ("A_log", "dt_bias")]
    assert kept and all(id(p) not in decayed for p in kept)


def test_it_is_gated_deltanet_sized_by_slots():
    torch.manual_seed(0)
    slots = pulse.build_mixer("pulse", 32, gate="delta", num_slots=6, slot_dim=40, num_heads=2, dtype=F64)
    torch.manual_seed(0)
    gdn = pulse.build_mixer("gated_deltanet", 32, head_dim=6, expand_v=20 / 6, num_heads=2, dtype=F64)
    x = torch.randn(2, 9, 32, dtype=F64)
    assert slots.head_v == 20 and slots.param_count() == gdn.param_count()
    torch.testing.assert_close(slots(x)[0], gdn(x)[0])


def test_low_precision_runs_in_float32_inside():
    torch.manual_seed(0)
    m = pulse.build_mixer("pulse", 32, gate="delta", num_heads=2)
    x = torch.randn(2, 70, 32)
    y, _ = m(x)
    y16, _ = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y, rtol=0.1, atol=0.1)
