"""Pydantic specs: what a recipe may say. Specs never build modules."""

from pulse.specs.base import Spec
from pulse.specs.load import load_recipe, recipe_from_dict
from pulse.specs.recipe import RecipeBase, json_schema, recipe_model

__all__ = ["RecipeBase", "Spec", "json_schema", "load_recipe", "recipe_from_dict", "recipe_model"]
