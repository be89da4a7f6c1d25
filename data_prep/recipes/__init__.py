"""Recipe registry: ``get_recipe(name, **overrides) -> Recipe``.

Each recipe lives in ``data_prep/recipes/<module>.py`` and exposes
``build(**overrides) -> base.Recipe`` (overrides replace ``RecipeConfig`` fields, see
``base.override``). Modules are imported lazily, on first use, so a broken or missing recipe
module never stops the others from working.
"""

from __future__ import annotations

import importlib

from data_prep.recipes import base

# Recipe name -> module under data_prep.recipes.
RECIPE_MODULES = {
    "pretrain_tcp20": "pretrain_tcp20",
    "generic": "generic",
    "tuab": "tuab",
    "tuev": "tuev",
    "bcic2a": "bcic2a",
    "seedv": "seedv",
    "sleepedfx": "sleepedfx",
    "mental_arithmetic": "mental_arithmetic",
    "mumtaz": "mumtaz",
    "physionet_p300": "physionet_p300",
}


def recipe_names() -> tuple[str, ...]:
  """Every registered recipe name."""
  return tuple(RECIPE_MODULES)


def get_recipe(name: str, **overrides) -> base.Recipe:
  """Build the named recipe, with config fields overridden by ``overrides``."""
  if name not in RECIPE_MODULES:
    raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPE_MODULES)}")
  module = importlib.import_module(f"data_prep.recipes.{RECIPE_MODULES[name]}")
  recipe = module.build(**overrides)
  if not isinstance(recipe, base.Recipe):
    raise TypeError(f"data_prep.recipes.{RECIPE_MODULES[name]}.build() returned "
                    f"{type(recipe).__name__}, not a Recipe")
  return recipe
