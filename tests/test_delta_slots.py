"""The `pulse_delta` kind (once the PULSE `delta` gate): slots written by the delta rule
(pulse/blocks/pulse/delta_slots.py).

The block contract (shape, causal, split, step, batch, gradient, param formula) is covered by
tests/test_mixer_properties.py as the kind `pulse_delta`, and the chunkwise op against its per-token
reference by tests/test_recall_mixers.py; this file holds what is particular to the slot bank.
"""

from __future__ import annotations

import pytest
import torch

import pulse
from pulse.blocks.pulse.delta_slots import DeltaSlotLayer
from pulse.errors import PulseError, PulseWarning

F64 = torch.float64


def layer(**kwargs) -> DeltaSlotLayer:
    torch.manual_seed(0)
    m = pulse.build_mixer("pulse_delta", 16, num_slots=8, num_heads=2, dtype=F64, **kwargs)
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


def test_the_old_spelling_loads_as_pulse_delta_with_a_note_and_refuses_what_it_does_not_have():
    with pytest.warns(PulseWarning, match='was renamed kind "pulse_delta"'):
        old = pulse.build_mixer("pulse", 16, gate="delta", local="conv", communication=False)
    assert isinstance(old, DeltaSlotLayer)
    with pytest.raises(PulseError, match="communication = true cannot apply"):
        pulse.build_mixer("pulse", 16, gate="delta", communication=True)
    with pytest.raises(PulseError, match='local = "attention" cannot apply'):
        pulse.build_mixer("pulse", 16, gate="delta", local="attention")
    with pytest.raises(PulseError, match="conv_size"):
        pulse.build_mixer("pulse_delta", 16, conv_size=1)
    with pytest.raises(PulseError, match="gate"):
        pulse.build_mixer("pulse_managed", 16, gate="delta")  # the managed/adaptive banks keep gated blends
    with pytest.raises(PulseError, match="gate"):
        pulse.build_mixer("pulse_delta", 16, gate="delta")  # the new kind has no gate to choose
    with pytest.raises(PulseError, match="must divide slot_dim"):
        DeltaSlotLayer(16, num_heads=3, device="meta")


def test_an_old_recipe_and_its_checkpoint_load_unchanged(tmp_path):
    """A recipe (and a stored one, as checkpoints hold) written with kind "pulse", gate "delta" builds the
    same module, and weights saved from the new kind load into it: the parameter names are unchanged."""
    old = {"model": {"dim": 16, "depth": 1, "layout": ["p"], "mixers": {
        "p": {"kind": "pulse", "gate": "delta", "local": "conv", "communication": False, "num_heads": 2,
              "num_slots": 8, "slot_dim": None, "chunk_size": 64, "conv_size": 4}}}}
    with pytest.warns(PulseWarning, match="was renamed"):
        recipe = pulse.recipe_from_dict(old)
    assert recipe.model.mixers["p"].kind == "pulse_delta"
    new = pulse.recipe_from_dict({"model": {"dim": 16, "depth": 1, "layout": ["p"], "mixers": {
        "p": {"kind": "pulse_delta", "num_heads": 2, "num_slots": 8}}}})
    assert recipe.hash() == new.hash()
    torch.manual_seed(0)
    saved = pulse.build_model(new).state_dict()
    model = pulse.build_model(recipe)
    model.load_state_dict(saved)  # strict: every name matches


@pytest.mark.parametrize("kind", ["pulse_delta", "gated_deltanet", "deltanet"])
def test_a_foreign_state_is_a_clear_error(kind):
    m = pulse.build_mixer(kind, 16, num_heads=2, dtype=F64)
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
        "p": {"kind": "pulse_delta", "num_heads": 2}}}})
    model = pulse.build_model(recipe)
    opt = make_optimizer(model, TrainSpec(weight_decay=0.1, no_decay=[]))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    kept = [getattr(layer.mixer, name) for layer in model.layers for name in ("A_log", "dt_bias")]
    assert kept and all(id(p) not in decayed for p in kept)


def test_it_is_gated_deltanet_sized_by_slots():
    torch.manual_seed(0)
    slots = pulse.build_mixer("pulse_delta", 32, num_slots=6, slot_dim=40, num_heads=2, dtype=F64)
    torch.manual_seed(0)
    gdn = pulse.build_mixer("gated_deltanet", 32, head_dim=6, expand_v=20 / 6, num_heads=2, dtype=F64)
    x = torch.randn(2, 9, 32, dtype=F64)
    assert slots.head_v == 20 and slots.param_count() == gdn.param_count()
    torch.testing.assert_close(slots(x)[0], gdn(x)[0])


def test_low_precision_runs_in_float32_inside():
    torch.manual_seed(0)
    m = pulse.build_mixer("pulse_delta", 32, num_heads=2)
    x = torch.randn(2, 70, 32)
    y, _ = m(x)
    y16, _ = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y, rtol=0.1, atol=0.1)


def test_a_recipe_that_changes_a_cards_mixer_kind_replaces_the_table():
    """text-hybrid.toml takes pulse-hybrid-small's `pulse` table (kind pulse, gate gru) and names kind
    pulse_delta: the card's gru keys mean nothing to the new kind and are not merged in."""
    from pulse.specs.load import deep_merge

    card = {"mixers": {"pulse": {"kind": "pulse", "gate": "gru", "num_slots": 16}}}
    assert deep_merge(card, {"mixers": {"pulse": {"kind": "pulse_delta", "num_heads": 2}}}) == \
        {"mixers": {"pulse": {"kind": "pulse_delta", "num_heads": 2}}}
    assert deep_merge(card, {"mixers": {"pulse": {"num_slots": 8}}}) == \
        {"mixers": {"pulse": {"kind": "pulse", "gate": "gru", "num_slots": 8}}}
