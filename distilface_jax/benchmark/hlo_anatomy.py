"""What a compiled step does, read off its optimized HLO text: collectives, precision casts, loops.

`hlo_stats(jax.jit(f).lower(*args).compile().as_text())` counts, per device program:
  - collectives (all-gather, all-reduce, reduce-scatter, ...), with the bytes of their results;
  - host callbacks (a device → host round trip inside the step);
  - f32↔bf16 converts, and how many of them are standalone kernels (a memory pass of their own)
    rather than fused into a neighbouring kernel;
  - while loops (on CPU these are threefry's rolled rounds: dropout randomness) and fusions.
Compiled HLO names operands without their types, so converts are classified through a map of
every instruction's element type.
"""

from __future__ import annotations

import re

import numpy as np

_COLLECTIVE = re.compile(r" = (.*?) (all-gather|all-reduce|reduce-scatter|collective-permute|all-to-all)(-start)?\(")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (\w+)\[[^=]*?\b(\w[\w\-]*)\((%?[\w.\-]+)?")
_BYTES = {
    "f64": 8,
    "s64": 8,
    "u64": 8,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "bf16": 2,
    "f16": 2,
    "s16": 2,
    "u16": 2,
    "s8": 1,
    "u8": 1,
    "pred": 1,
}


def _collectives(text: str) -> dict[str, dict[str, int]]:
    """{op: {"count", "bytes"}}; bytes are of the op's result (per device), tuples summed.
    Async pairs (`*-start` / `*-done`) count once, at their start."""
    found: dict[str, dict[str, int]] = {}
    for match in _COLLECTIVE.finditer(text):
        entry = found.setdefault(match.group(2), {"count": 0, "bytes": 0})
        entry["count"] += 1
        shapes = re.findall(r"(\w+)\[([\d,]*)\]", match.group(1))
        if match.group(3) and match.group(2) == "all-gather":
            shapes = shapes[-1:]  # GPU's async all-gather-start returns (operand, result)
        for dtype, dims in shapes:
            entry["bytes"] += _BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
    return found


def _precision_converts(text: str) -> dict[str, int]:
    """f32↔bf16 converts, split into those fused into a bigger kernel and standalone ones (a
    kernel, i.e. a memory round trip, of their own: ENTRY-level, or a computation XLA names
    `wrapped_convert*` (CPU) / `fused_convert*` (GPU) that holds nothing but the convert)."""
    dtypes: dict[str, str] = {}
    converts = []  # (result dtype, operand name, computation)
    computation = ""
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith("{"):
            computation = line.split(" (")[0]
            continue
        match = _INSTRUCTION.match(line)
        if match:
            name, dtype, op, operand = match.groups()
            dtypes[name] = dtype
            if op == "convert" and operand:
                converts.append((dtype, operand.lstrip("%"), computation))
    counts = {"f32_to_bf16": 0, "bf16_to_f32": 0, "standalone": 0}
    for out, operand, computation in converts:
        source = dtypes.get(operand)
        if {out, source} != {"f32", "bf16"}:
            continue
        counts["f32_to_bf16" if out == "bf16" else "bf16_to_f32"] += 1
        counts["standalone"] += computation.startswith(("ENTRY", "%wrapped_convert", "%fused_convert"))
    return counts


def hlo_stats(text: str) -> dict:
    """Collectives, host callbacks, f32↔bf16 converts and loops in a compiled step's HLO text."""
    return {
        "collectives": _collectives(text),
        "host_callbacks": len(re.findall(r'custom_call_target="[^"]*callback[^"]*"', text)),
        "converts": _precision_converts(text),
        "while_loops": len(re.findall(r" while\(", text)),
        "fusions": len(re.findall(r" fusion\(", text)),
        "hlo_chars": len(text),
    }
