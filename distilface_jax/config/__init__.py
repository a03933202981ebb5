"""Run configs: the base recipe, each key's one-line meaning (train --help), checks before any work."""
