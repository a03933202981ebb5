"""AdamW and its learning-rate schedule, as SimCSE's HF Trainer sets them up."""

from __future__ import annotations

import dataclasses

import jax
import optax

from distilface_jax.config.keys import Config


def learning_rate_schedule(learning_rate: float, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """HF Trainer's `linear` schedule (SimCSE's): optional linear warm-up, then linear decay to 0."""
    decay = optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1))
    if not warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def _decay_mask(params):
    """HF Trainer decays every weight except biases and LayerNorm scales."""

    def decays(path, _):
        name = path[-1].key if hasattr(path[-1], "key") else str(path[-1])
        return name not in ("bias", "scale")

    return jax.tree_util.tree_map_with_path(decays, params)


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """The optimizer keys of a run config (defaults: `config/base.py`, SimCSE's)."""

    learning_rate: float = 3e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0

    @classmethod
    def from_config(cls, config: Config) -> OptimizerSettings:
        return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


def make_optimizer(
    settings: OptimizerSettings, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW as in SimCSE's HF Trainer: clip at global norm 1.0, ε 1e-8, weight decay 0 by default."""
    schedule = learning_rate_schedule(settings.learning_rate, total_steps, settings.warmup_steps)
    transforms = []
    if settings.max_grad_norm > 0:
        transforms.append(optax.clip_by_global_norm(settings.max_grad_norm))
    transforms.append(
        optax.adamw(
            schedule,
            b1=settings.adam_b1,
            b2=settings.adam_b2,
            eps=settings.adam_eps,
            weight_decay=settings.weight_decay,
            mask=_decay_mask,
        )
    )
    return optax.chain(*transforms), schedule
