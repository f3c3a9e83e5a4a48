"""The recipe: a model plus optional task, train and bench sections.

Spec classes with forward references ("MixerSpec", "TaskSpec", …) are resolved
against the registry here: each registry generation gets its own resolved
subclasses, so a kind registered later is accepted by recipes validated later.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, PrivateAttr, create_model

from pulse import registry
from pulse.specs.base import Spec
from pulse.specs.bench import BenchSpec
from pulse.specs.run import TrainSpec

ROLE_TYPE_NAMES = {
    "mixer": "MixerSpec",
    "mlp": "MlpSpec",
    "norm": "NormSpec",
    "positional": "PositionalSpec",
    "model": "ModelSpec",
    "task": "TaskSpec",
}


class RecipeBase(Spec):
    """A whole recipe. `source` is the file it came from (None when built in Python)."""

    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        return self._source

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """sha256 of the canonical JSON form: equal recipes hash equally."""
        return recipe_hash(self.to_dict())


def _union(classes: list[type]) -> Any:
    return Annotated[Union[tuple(classes)], Field(discriminator="kind")]  # noqa: UP007


@functools.cache
def _resolved(generation: int) -> dict[str, Any]:
    """Per registry generation: the union type of each role and the resolved spec classes."""
    specs = {e.kind: e.spec for e in registry.entries()}
    resolved: dict[str, type] = {k: s for k, s in specs.items() if s.__pydantic_complete__}
    # Two rounds resolve a spec whose fields name a role whose members have forward refs.
    for _ in range(2):
        namespace = {
            name: _union([resolved[k] for k in registry.kinds(role) if k in resolved])
            for role, name in ROLE_TYPE_NAMES.items()
            if any(k in resolved for k in registry.kinds(role))
        }
        for kind, spec in specs.items():
            if spec.__pydantic_complete__:
                continue
            sub = create_model(spec.__name__, __base__=spec, __doc__=spec.__doc__)
            if sub.model_rebuild(_types_namespace=namespace, raise_errors=False):
                resolved[kind] = sub
    missing = sorted(set(specs) - set(resolved))
    if missing:
        raise RuntimeError(f"could not resolve spec classes for kinds {missing}")
    namespace = {
        name: _union([resolved[k] for k in registry.kinds(role)])
        for role, name in ROLE_TYPE_NAMES.items()
        if registry.kinds(role)
    }
    recipe = create_model(
        "Recipe",
        __base__=RecipeBase,
        __doc__="A PULSE recipe: [model] plus optional [task], [train], [bench].",
        model=(namespace["ModelSpec"], Field(description="the model: a zoo card via `from`, and overrides")),
        task=(namespace["TaskSpec"] | None, Field(None, description="what to train or evaluate on"))
        if "TaskSpec" in namespace
        else (type(None), None),
        train=(TrainSpec, Field(default_factory=TrainSpec)),
        bench=(BenchSpec, Field(default_factory=BenchSpec)),
    )
    return {"namespace": namespace, "specs": resolved, "recipe": recipe}


def recipe_model() -> type[RecipeBase]:
    """The pydantic model of a whole recipe, for the registry as it stands now."""
    return _resolved(registry.generation())["recipe"]


def spec_class(kind: str) -> type[BaseModel]:
    """The resolved spec class of a registered kind."""
    registry.get(kind)
    return _resolved(registry.generation())["specs"][kind]


def json_schema() -> dict[str, Any]:
    schema = recipe_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "PULSE recipe"
    return schema


def recipe_hash(data: dict[str, Any]) -> str:
    """sha256 of a recipe dict's canonical JSON (sorted keys, no spaces): what RecipeBase.hash and the
    checkpoints' metadata use."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
