"""What each config key means (for `train --help`), and misspelt `--config.KEY` overrides.

The meanings are the key declarations' (`keys.py`), the same declarations `base_config()` is
built from, so a key cannot exist without its one-line meaning.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from distilface_jax.config import keys
from distilface_jax.config.keys import Config

KEY_HELP = {key.name: key.help for key in keys.ALL_KEYS}  # derived: the declarations are `keys.py`


def flat_items(config, prefix: str = "") -> list[tuple[str, object]]:
    """[(dotted key, value)] of every leaf of a ConfigDict, in definition order."""
    items = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            items += flat_items(value, f"{name}.")
        else:
            items.append((name, value))
    return items


def describe(config: Config) -> str:
    """One line per key: name, default (this config's value) and meaning."""
    items = flat_items(config)
    width = max(len(f"--config.{key}={value!r}") for key, value in items)
    return "\n".join(
        f"  {f'--config.{key}={value!r}':<{width}}  {KEY_HELP.get(key, '')}".rstrip() for key, value in items
    )


def override_keys(argv: Sequence[str]) -> list[str]:
    """Dotted keys of `--config.KEY=value` / `--config.KEY value` arguments."""
    return [key for key, _ in overrides(argv)]


def overrides(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """(dotted key, raw value or None when it is the next argument) of each `--config.KEY` argument."""
    found = []
    for index, argument in enumerate(argv):
        if argument.startswith("--config."):
            key, sep, value = argument[len("--config.") :].partition("=")
            found.append((key, value if sep else (argv[index + 1] if index + 1 < len(argv) else None)))
    return found


def value_message(key: str, raw: str | None, default) -> str | None:
    """None when `raw` parses as the type of the key's default; else the error naming both."""
    if raw is None or default is None or isinstance(default, str):
        return None
    kind = type(default)
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
        elif kind in (int, float):
            kind(raw)
        else:
            return None
    except ValueError:
        return f"--config.{key}={raw}: expected {kind.__name__} like the default {default!r}"
    return None


def unknown_key_message(key: str, known: Iterable[str]) -> str | None:
    """None for a known key (or a prefix of one: a whole sub-config); else the error with a suggestion."""
    known = list(known)
    if key in known or any(k.startswith(key + ".") for k in known):
        return None
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean --config.{close[0]}?" if close else "; see --help for the keys"
    return f"--config.{key}: no such config key{hint}"
