"""`python -m distilface_jax.benchmark ...`: the harness (harness.py)."""

from distilface_jax.benchmark.harness import main

main()
