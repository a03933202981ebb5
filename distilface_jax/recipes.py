"""The training recipes by name, and the one a config asks for: what `train.py` hands the loop.

Above both `training/` (the loop, the recipe interface, SimCSE) and `distill/` (distillation),
so the loop never imports a recipe it is handed.
"""

from __future__ import annotations

from distilface_jax.config import keys
from distilface_jax.config.keys import Config
from distilface_jax.distill.run import DistillRecipe
from distilface_jax.training.recipe import Recipe
from distilface_jax.training.simcse import SimCSE

RECIPES = {SimCSE.name: SimCSE, DistillRecipe.name: DistillRecipe}


def for_config(config: Config) -> Recipe:
    """A fresh recipe of the kind `config` asks for (`config.keys.recipe_name`)."""
    return RECIPES[keys.recipe_name(config)]()
