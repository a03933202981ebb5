"""The sentence encoder SimCSE trains: Transformer encoder + pooler + optional MLP / MLM heads.

Parameter tree (no `{"params": ...}` wrapper in the rest of the library):
    {"encoder": {...}, "mlp": {"dense": {"kernel", "bias"}}, ["mlm_head": {...}]}
The MLP head always exists so that every pooler and every recipe share one tree; whether it is
*applied* is a call-time choice (`apply_mlp`), which is how SimCSE's `mlp_only_train` works.
BERT's pooler (CLS → Linear → tanh) has exactly the MLP head's shape, and SimCSE's conversion
script maps the head to it: `encode`/`evaluate --model` and `mlp_init="pretrained"` read it as the
head, while training recipes start the head fresh, as SimCSE's `BertForCL` does (`hf.load_pretrained`).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilface_jax.models.config import EncoderConfig
from distilface_jax.models.encoder import Encoder, exact_gelu
from distilface_jax.models.pooling import POOLERS, pool


class MLPHead(nn.Module):
    """SimCSE's `MLPLayer`: tanh(W x + b), H → H, computed in float32."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(
            self.config.hidden_size,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(self.config.initializer_range),
            name="dense",
        )
        return jnp.tanh(dense(x))


class MLMHead(nn.Module):
    """BERT/DistilBERT MLM head: LN(gelu(W h + b)) @ D + bias, D [H, V] the decoder.

    Untied by default, as in SimCSE's `BertForCL` (princeton-nlp/SimCSE, simcse/models.py): its
    `lm_head = BertLMPredictionHead(config)` is a head of its own, and `BertForCL` does not
    override `get_output_embeddings`, so transformers' `tie_weights` finds nothing to tie and
    the decoder trains apart from the word embeddings. (`tie_decoder=True` reads Eᵀ instead:
    the tied head this library used before, kept so that such runs still resume.)
    """

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    tie_decoder: bool = False

    @nn.compact
    def __call__(self, hidden, word_embeddings):
        config = self.config
        x = nn.Dense(
            config.hidden_size,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(config.initializer_range),
            name="transform",
        )(hidden)
        x = nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=self.dtype, param_dtype=jnp.float32, name="layer_norm")(
            exact_gelu(x)
        )
        bias = self.param("bias", nn.initializers.zeros, (config.vocab_size,), jnp.float32)
        if self.tie_decoder:
            decoder = word_embeddings.T  # [H, V]
        else:
            decoder = self.param(
                "decoder",
                nn.initializers.normal(config.initializer_range),
                (config.hidden_size, config.vocab_size),
                jnp.float32,
            )  # [H, V]
        logits = jnp.einsum("blh,hv->blv", x, decoder.astype(self.dtype))
        return logits.astype(jnp.float32) + bias  # [B, L, V]


class SentenceEncoder(nn.Module):
    config: EncoderConfig
    pooler: str = "cls"
    dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"
    with_mlm_head: bool = False
    tie_mlm_decoder: bool = False  # see MLMHead

    def setup(self):
        if self.pooler not in POOLERS:
            raise ValueError(f"unknown pooler {self.pooler!r}; expected one of {POOLERS}")
        self.encoder = Encoder(self.config, self.dtype, self.attention_impl)
        self.mlp = MLPHead(self.config)
        if self.with_mlm_head:
            self.mlm_head = MLMHead(self.config, self.dtype, self.tie_mlm_decoder)

    def __call__(
        self,
        input_ids,
        attention_mask,
        token_type_ids: Optional[jax.Array] = None,
        *,
        deterministic: bool = True,
        apply_mlp: bool = True,
    ) -> jax.Array:
        """[B, L] tokens → [B, H] float32 sentence embeddings."""
        output = self.encoder(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        # Hidden-state distillation reads these ("intermediates" collection; nothing kept otherwise).
        self.sow("intermediates", "hidden_states", output.hidden_states)
        pooled = pool(self.pooler, output, attention_mask)
        if self.pooler == "cls" and apply_mlp:
            return self.mlp(pooled)
        return pooled

    def mlm_logits(
        self, input_ids, attention_mask, token_type_ids: Optional[jax.Array] = None, *, deterministic: bool = True
    ) -> jax.Array:
        """[B, L] (masked) tokens → [B, L, V] float32 MLM logits."""
        output = self.encoder(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        return self.mlm_head(output.last_hidden_state, self.encoder.word_embedding_table())

    def init_all(self, input_ids, attention_mask):
        """Touches every submodule so `init` creates the whole tree (MLP and MLM head included)."""
        embedding = self(input_ids, attention_mask)
        self.mlp(jnp.zeros((1, self.config.hidden_size), jnp.float32))
        if self.with_mlm_head:
            return embedding, self.mlm_logits(input_ids, attention_mask)
        return embedding


def init_params(
    config: EncoderConfig, key: jax.Array, *, with_mlm_head: bool = False, tie_mlm_decoder: bool = False
) -> dict:
    """Randomly initialised parameter tree (the layout `hf.py` imports into)."""
    model = SentenceEncoder(config, with_mlm_head=with_mlm_head, tie_mlm_decoder=tie_mlm_decoder)
    ids = jnp.zeros((1, 4), jnp.int32)
    return model.init(key, ids, jnp.ones_like(ids), method=SentenceEncoder.init_all)["params"]
