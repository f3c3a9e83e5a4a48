"""The block contract, checked over every registered mixer (docs/architecture.md, "The block contract").

A new mixer kind is tested here as soon as it is registered; nobody writes a new test. So is
every slot update of the `pulse` kind (each choice of its `gate` field, written as
`pulse:gate=mingru`, the syntax of `pulse bench --mixer`). Checks run in float64 at
hypothesis-drawn batch sizes and awkward lengths.
"""

from __future__ import annotations

import functools
import typing

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pulse
from pulse import contract
from pulse.bench.runner import parse_mixer
from pulse.specs.pulse import PulseSpec

GATES = typing.get_args(PulseSpec.model_fields["gate"].annotation)
MIXERS = pulse.registry.kinds("mixer") + [f"pulse:gate={g}" for g in GATES if g != PulseSpec().gate]
DIMS = (16, 24, 32)


def build(name: str, dim: int, **kwargs) -> torch.nn.Module:
    """A mixer named as `kind` or `kind:field=value,…`."""
    kind, params = parse_mixer(name)
    return pulse.build_mixer(kind, dim, **params, **kwargs)


@functools.cache
def mixer(kind: str, dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(kind, dim, dtype=torch.float64).eval()


def chunk_of(module: torch.nn.Module) -> int:
    return int(getattr(module, "chunk_size", 8))


def lengths(chunk: int) -> st.SearchStrategy[int]:
    awkward = st.sampled_from(sorted({1, 2, max(1, chunk - 1), chunk + 1, 2 * chunk + 3}))
    return st.one_of(awkward, st.integers(1, 2 * chunk + 5))


def draw_input(data, kind: str):
    dim = data.draw(st.sampled_from(DIMS), label="dim")
    m = mixer(kind, dim)
    batch = data.draw(st.integers(1, 3), label="batch")
    length = data.draw(lengths(chunk_of(m)), label="length")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    gen = torch.Generator().manual_seed(seed)
    return m, torch.randn(batch, length, dim, generator=gen, dtype=torch.float64)


def test_registry_has_mixers():
    assert "attention" in MIXERS


@pytest.mark.parametrize("kind", MIXERS)
@given(data=st.data())
def test_shape(kind, data):
    m, x = draw_input(data, kind)
    contract.check_shape(m, x)


@pytest.mark.parametrize("kind", MIXERS)
@given(data=st.data())
def test_causal(kind, data):
    m, x = draw_input(data, kind)
    t = data.draw(st.integers(0, x.shape[1] - 1), label="t")
    contract.check_causal(m, x, t)


@pytest.mark.parametrize("kind", MIXERS)
@given(data=st.data())
def test_split(kind, data):
    m, x = draw_input(data, kind)
    if x.shape[1] < 2:
        x = torch.cat((x, x), dim=1)
    k = data.draw(st.integers(1, x.shape[1] - 1), label="k")
    contract.check_split(m, x, k)


@pytest.mark.parametrize("kind", MIXERS)
@given(data=st.data())
def test_step(kind, data):
    m, x = draw_input(data, kind)
    contract.check_step(m, x)


@pytest.mark.parametrize("kind", MIXERS)
@given(data=st.data())
def test_batch(kind, data):
    m, x = draw_input(data, kind)
    row = data.draw(st.integers(0, x.shape[0] - 1), label="row")
    contract.check_batch(m, x, row)


@pytest.mark.parametrize("kind", MIXERS)
@pytest.mark.parametrize("dim", [16, 24])
def test_gradient(kind, dim):
    torch.manual_seed(1)
    m = build(kind, dim, dtype=torch.float64)
    length = 2 * chunk_of(m) + 3
    contract.check_gradient(m, torch.randn(2, length, dim, dtype=torch.float64))


@pytest.mark.parametrize("kind", MIXERS)
@given(dim=st.integers(2, 128).map(lambda k: 8 * k))
def test_builds_with_defaults_on_meta(kind, dim):
    m = build(kind, dim, device="meta")
    assert isinstance(m, pulse.Mixer)
    assert m.param_count() == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("kind", MIXERS)
def test_costs_are_sane(kind):
    m = build(kind, 64, device="meta")
    for n in (1, 1024, 8192):
        assert 0 < m.flops_per_token(n) < float("inf")
        assert m.state_numel(n) >= 0


@pytest.mark.parametrize("kind", MIXERS)
def test_wrong_shape_is_a_clear_error(kind):
    m = mixer(kind, 16)
    with pytest.raises(pulse.PulseError, match="expects input of shape"):
        m(torch.randn(2, 5, 24, dtype=torch.float64))
    with pytest.raises(pulse.PulseError, match="expects input of shape"):
        m(torch.randn(5, 16, dtype=torch.float64))


@pytest.mark.parametrize("kind", MIXERS)
@given(data=st.data())
def test_documents(kind, data):
    """Packed documents: each position as its document alone, the state as the last document's alone."""
    m, x = draw_input(data, kind)
    b, t = x.shape[0], x.shape[1]
    starts = [sorted(data.draw(st.sets(st.integers(0, t - 1), max_size=4), label=f"starts[{r}]")) for r in range(b)]
    contract.check_documents(m, x, starts, torch.randn(b, 3, x.shape[2], dtype=torch.float64))
