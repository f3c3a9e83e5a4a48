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


def _module_entries():
    return [e for e in pulse.list_blocks() if e.module is not None and e.role != "task"]


@pytest.mark.parametrize("entry", _module_entries(), ids=lambda e: e.kind)
def test_spec_fields_are_the_module_arguments_with_the_same_defaults(entry):
    """A kind is written once: each spec field is a constructor keyword with the same default."""
    import inspect

    from pulse.specs.recipe import spec_class

    params = inspect.signature(entry.module.__init__).parameters
    for name, field in spec_class(entry.kind).model_fields.items():
        if name == "kind":
            continue
        assert name in params, f"{entry.kind}: spec field `{name}` is not an argument of {entry.module.__name__}"
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        assert params[name].default == default, (
            f"{entry.kind}.{name}: spec default {default!r} != {entry.module.__name__} default {params[name].default!r}"
        )
    required = [n for n, p in params.items() if n not in ("self", "dim") and p.default is inspect.Parameter.empty
                and p.kind is p.KEYWORD_ONLY]
    assert not required, f"{entry.module.__name__} has required arguments no spec field fills: {required}"


def test_the_registry_records_where_each_kind_is_defined():
    entry = registry.get("linear_attention")
    assert entry.defined_in == "pulse/blocks/mixers/linear_attention.py"
    assert registry.get("rotary").defined_in == "pulse/specs/layers.py"


@pytest.mark.parametrize("kind", registry.kinds("mixer"))
def test_every_value_a_spec_allows_builds(kind):
    """Each value of a spec's choice fields (a Literal) that the spec accepts, the block accepts too — for kinds
    built by the default builder and by their own builders alike (no value the recipe allows fails later)."""
    import typing

    from pulse.specs.recipe import spec_class

    for name, field in spec_class(kind).model_fields.items():
        if name == "kind" or typing.get_origin(field.annotation) is not typing.Literal:
            continue
        for value in typing.get_args(field.annotation):
            try:
                pulse.make_spec(kind, **{name: value})
            except pulse.PulseError:
                continue  # the spec itself refuses it beside the other defaults (a rule across fields)
            pulse.build_mixer(kind, 64, device="meta", **{name: value})
