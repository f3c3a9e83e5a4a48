"""The registry is closed, strict and searchable."""

from __future__ import annotations

from typing import Literal

import pytest

import pulse
from pulse import registry
from pulse.specs.base import Spec


class _Probe(Spec):
    kind: Literal["attention"] = "attention"


class _Mismatch(Spec):
    kind: Literal["something"] = "something"


def test_second_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("attention", role="mixer", spec=_Probe, builder=lambda s, c: None)


def test_spec_kind_must_match():
    with pytest.raises(ValueError, match="declares kind"):
        registry.register("other", role="mixer", spec=_Mismatch)


def test_unknown_role_is_an_error():
    with pytest.raises(ValueError, match="unknown role"):
        registry.register("x", role="widget", spec=_Mismatch)  # type: ignore[arg-type]
    with pytest.raises(pulse.PulseError, match="did you mean `mixer`"):
        pulse.list_blocks(role="mixers")


def test_list_blocks_globs_and_filters():
    kinds = [e.kind for e in pulse.list_blocks("*norm")]
    assert kinds == ["layernorm", "rmsnorm"]
    assert all(e.role == "mixer" for e in pulse.list_blocks(role="mixer"))
    assert {e.role for e in pulse.list_blocks()} >= {"mixer", "mlp", "norm", "positional", "model"}


def test_every_kind_has_a_doc_and_described_fields():
    from pulse.specs.recipe import spec_class

    for entry in pulse.list_blocks():
        assert entry.doc, f"{entry.kind} has no docstring"
        for name, field in spec_class(entry.kind).model_fields.items():
            if name != "kind" and entry.role != "model":
                assert field.description, f"{entry.kind}.{name} has no description"
