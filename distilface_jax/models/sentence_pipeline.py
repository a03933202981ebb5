"""The sentence pipeline: the one description of how text becomes a sentence embedding.

    text ─ tokenizer, cut to max_length ─> encoder ─> pooler ─> [MLP head] ─> [width map]
         ─> [first output_dim dimensions] ─> [L2 normalisation]            → [B, D] float32

`SentencePipeline` is that description; the weights stay apart (one `SentenceEncoder` tree,
with a width map as its `projection` subtree). `embed` is the one function that combines the
steps: the SimCSE objective, the distillation student and teacher, evaluation, `encode` and the
trainer's dev evaluation all call it, and export writes the same steps as sentence-transformers
modules (`interop/st_folder.py`). What each caller builds:
    SimCSE training        pooler, MLP head applied (even when train-only), nothing after
    distillation student   pooler, head as at evaluation, width map D_s → D_t when the widths
                           differ, normalised as the teacher is
    a run read back        what its workdir records (`run_record.run_pipeline`)
    a model folder         what its sentence-transformers modules say (`st_folder.load`)
The pipeline is hashable (the tokenizer does not take part), so jitted embedders are cached
per pipeline.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.pooling import POOLERS
from distilface_jax.models.sentence_model import SentenceEncoder

PROJECTION = "projection"  # params subtree of the linear width map D_in → D_out {"kernel", "bias"}
NORMALIZE_EPS = 1e-12  # sentence-transformers' Normalize (torch.nn.functional.normalize's eps)


@dataclasses.dataclass(frozen=True)
class SentencePipeline:
    encoder: EncoderConfig
    tokenizer: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    pooler: str = "avg"
    apply_mlp: bool = True  # the MLP head (cls pooler only); False: it was train-only (mlp_only_train)
    width_map: Optional[int] = None  # output width of the linear map after pooling; None: no map
    output_dim: Optional[int] = None  # keep the first output_dim dimensions (Matryoshka); None: all
    normalize: bool = False  # unit length (after the width map and the truncation)
    max_length: Optional[int] = None  # tokens read at most; None: the model's own limit

    def __post_init__(self):
        if self.pooler not in POOLERS:
            raise ValueError(f"unknown pooler {self.pooler!r}; expected one of {POOLERS}")
        full = self.width_map or self.encoder.hidden_size
        if self.output_dim is not None and not 1 <= self.output_dim <= full:
            raise ValueError(f"output_dim {self.output_dim} must be between 1 and the embedding width {full}")

    @property
    def uses_mlp(self) -> bool:
        """The MLP head is applied (only the cls pooler has one)."""
        return self.pooler == "cls" and self.apply_mlp

    @property
    def width(self) -> int:
        """D, the width of the embeddings `embed` returns."""
        return self.output_dim or self.width_map or self.encoder.hidden_size

    def token_limit(self) -> int:
        """Tokens read at most: `max_length`, never past the model's own limit (its position
        table, or the tokenizer's if that is smaller)."""
        limit = self.encoder.max_position_embeddings
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
            limit = tokenizer_limit
        return min(self.max_length or limit, limit)

    def module(
        self, dtype=jnp.float32, attention_impl: str = "xla", *, with_mlm_head: bool = False, tie_mlm_decoder=False
    ) -> SentenceEncoder:
        """The Flax module that runs the encoder, pooler and MLP head (compute dtype and
        attention kernel are how it runs, not what it computes)."""
        return SentenceEncoder(
            self.encoder,
            pooler=self.pooler,
            dtype=dtype,
            attention_impl=attention_impl,
            with_mlm_head=with_mlm_head,
            tie_mlm_decoder=tie_mlm_decoder,
        )

    def replace(self, **changes) -> SentencePipeline:
        return dataclasses.replace(self, **changes)

    def check_params(self, params) -> None:
        """The params hold the width map this pipeline applies, of the shape it says."""
        if self.width_map is None:
            return
        if PROJECTION not in params:
            raise ValueError(f"the pipeline applies a width map, but the params have no {PROJECTION!r} subtree")
        shape = tuple(jnp.shape(params[PROJECTION]["kernel"]))
        if shape != (self.encoder.hidden_size, self.width_map):
            raise ValueError(
                f"width map kernel has shape {shape}, the pipeline expects {(self.encoder.hidden_size, self.width_map)}"
            )


def l2_normalize(x: jax.Array, eps: float = NORMALIZE_EPS) -> jax.Array:
    """x / max(||x||, eps) along the last axis, in float32.

    sqrt(max(Σx², eps²)) equals max(||x||, eps) but, unlike `jnp.linalg.norm`, has a finite
    gradient at x = 0 (padding rows, a dead encoder), so no NaN can leak into an update.
    """
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))
    return x / norm


def embed(
    pipeline: SentencePipeline,
    params,
    rows: dict,
    *,
    model: Optional[SentenceEncoder] = None,
    keys: Optional[jax.Array] = None,
    deterministic: bool = True,
    features: bool = False,
):
    """[B, L] token rows → [B, D] float32 sentence embeddings, every step of the pipeline.

    rows: {"input_ids", "attention_mask"[, "token_type_ids"]}, each [B, L]. params: the
    `SentenceEncoder` tree (plus `projection` when the pipeline has a width map; a width map
    the pipeline does not apply, e.g. a distillation training head, is ignored). model: the
    module to run (default `pipeline.module()`; a training run passes its own, with its compute
    dtype, attention kernel or MLM head). keys: [B] dropout keys, one per row: the encoder then
    runs row by row under vmap, so each example gets its own dropout mask whatever the batch
    or device count (`deterministic=False` draws them); None: one batched call.
    features: also return the encoder's `EncoderFeatures` of the same forward pass (what
    token-level distillation compares): `(embeddings, features)`.
    """
    model = pipeline.module() if model is None else model
    if model.config != pipeline.encoder or model.pooler != pipeline.pooler:
        raise ValueError("embed: the model runs another encoder or pooler than the pipeline describes")
    encoder_params = {name: value for name, value in params.items() if name != PROJECTION}

    def encode(tokens: dict, key=None):  # encoder → pooler → [MLP head]: [b, L] → ([b, H], captured)
        output = model.apply(
            {"params": encoder_params},
            tokens["input_ids"],
            tokens["attention_mask"],
            tokens.get("token_type_ids"),
            deterministic=deterministic,
            apply_mlp=pipeline.apply_mlp,
            rngs=None if deterministic else {"dropout": key},
            mutable=["intermediates"] if features else False,
        )
        return output if features else (output, {})

    if keys is None:
        z, captured = encode(rows)  # [B, H]
    else:
        row_by_row = lambda row, key: encode({k: v[None] for k, v in row.items()}, key)
        z, captured = jax.vmap(row_by_row)(rows, keys)  # [B, 1, H], leaves [B, 1, ...]
        z, captured = z[:, 0], jax.tree_util.tree_map(lambda leaf: leaf[:, 0], captured)
    if pipeline.width_map is not None:  # The linear width map: [B, H] → [B, D_out].
        projection = params[PROJECTION]
        z = (
            jnp.matmul(z.astype(jnp.float32), projection["kernel"], precision=jax.lax.Precision.HIGHEST)
            + projection["bias"]
        )
    if pipeline.output_dim is not None:  # Matryoshka: the leading dimensions are the embedding.
        z = z[..., : pipeline.output_dim]
    z = l2_normalize(z) if pipeline.normalize else z
    return (z, EncoderFeatures.of(captured)) if features else z


class EncoderFeatures(NamedTuple):  # a pytree: jax transforms pass through it
    """What one forward pass saw besides the embedding: every hidden state (embeddings output,
    then each layer's: num_layers + 1 arrays [B, L, H]) and the last layer's attention
    query/key/value [B, L, N, d]."""

    hidden_states: tuple
    last_query: jax.Array
    last_key: jax.Array
    last_value: jax.Array

    @classmethod
    def of(cls, captured: dict) -> EncoderFeatures:
        """From the "intermediates" collection (`sow` keeps each value in a 1-tuple)."""
        sown = captured["intermediates"]
        last_index = max(int(name.rpartition("_")[2]) for name in sown["encoder"] if name.startswith("layer_"))
        last = sown["encoder"][f"layer_{last_index}"]["attention"]
        return cls(sown["hidden_states"][0], last["query_states"][0], last["key_states"][0], last["value_states"][0])
