"""A post-LayerNorm Transformer encoder that is, number for number, HF's DistilBERT or BERT.

One module serves both families. Their differences, all driven by `EncoderConfig.model_type`:
  - BERT adds token-type embeddings; DistilBERT has none.
  - BERT applies dropout after the attention output projection; DistilBERT does not
    (HF's `MultiHeadSelfAttention` returns `out_lin(context)` undropped).
Parameter names are family-neutral; `hf.py` holds the table to each family's HF names.

Exactness notes (each one was a real mismatch source somewhere):
  - GELU is the exact erf form: `jax.nn.gelu` defaults to the tanh approximation.
  - LayerNorm epsilon comes from the config (1e-12 for both families' released models).
  - Softmax runs in float32 even under bfloat16 compute, as HF's sdpa/eager paths do on CPU.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from distilface_jax.models.config import EncoderConfig

ATTENTION_IMPLEMENTATIONS = ("xla", "dot_product_attention")


class EncoderOutput(NamedTuple):
    last_hidden_state: jax.Array  # [B, L, H]
    hidden_states: tuple  # num_layers + 1 arrays [B, L, H]: embeddings output, then each layer.


def exact_gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _dense(features: int, config: EncoderConfig, dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(config.initializer_range),
        name=name,
    )


def _layer_norm(config: EncoderConfig, dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=jnp.float32, name=name)


class Embeddings(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, *, deterministic: bool):
        config = self.config
        embed_init = nn.initializers.normal(config.initializer_range)
        sequence_length = input_ids.shape[-1]
        if sequence_length > config.max_position_embeddings:
            raise ValueError(
                f"sequence length {sequence_length} exceeds max_position_embeddings {config.max_position_embeddings}"
            )
        word = nn.Embed(
            config.vocab_size, config.hidden_size, embedding_init=embed_init, dtype=self.dtype, name="word_embeddings"
        )(input_ids)  # [B, L, H]
        position = nn.Embed(
            config.max_position_embeddings,
            config.hidden_size,
            embedding_init=embed_init,
            dtype=self.dtype,
            name="position_embeddings",
        )(jnp.arange(sequence_length))
        x = word + position[None]
        if config.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + nn.Embed(
                config.type_vocab_size,
                config.hidden_size,
                embedding_init=embed_init,
                dtype=self.dtype,
                name="token_type_embeddings",
            )(token_type_ids)
        x = _layer_norm(config, self.dtype, "layer_norm")(x)
        return nn.Dropout(config.hidden_dropout)(x, deterministic=deterministic)


def _attention_weights(query, key, attention_mask, dtype):
    """Softmax(q kᵀ / √d) with padded keys masked. q, k: [B, L, N, D]; mask: [B, L] → [B, N, L, L]."""
    scores = jnp.einsum("bqnd,bknd->bnqk", query, key) / math.sqrt(query.shape[-1])
    scores = scores.astype(jnp.float32)
    key_is_real = attention_mask[:, None, None, :].astype(bool)
    scores = jnp.where(key_is_real, scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)


class SelfAttention(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

    @nn.compact
    def __call__(self, x, attention_mask, *, deterministic: bool):
        config = self.config
        batch, length, _ = x.shape
        split = lambda t: t.reshape(batch, length, config.num_heads, config.head_dim)  # [B, L, N, D]
        query = split(_dense(config.hidden_size, config, self.dtype, "query")(x))
        key = split(_dense(config.hidden_size, config, self.dtype, "key")(x))
        value = split(_dense(config.hidden_size, config, self.dtype, "value")(x))
        # For attention-relation distillation (distill/relations.py): kept only when the caller
        # asks for the "intermediates" collection; otherwise sow stores nothing and costs nothing.
        for name, array in (("query_states", query), ("key_states", key), ("value_states", value)):
            self.sow("intermediates", name, array)

        needs_probability_dropout = not deterministic and config.attention_dropout > 0.0
        if self.attention_impl == "dot_product_attention" and not needs_probability_dropout:
            # Fused kernel (cuDNN flash attention on GPU); it has no dropout on the probabilities,
            # so it is only used when that dropout is off.
            mask = attention_mask[:, None, None, :].astype(bool)  # [B, 1, 1, L]
            context = jax.nn.dot_product_attention(query, key, value, mask=mask)
        else:
            weights = _attention_weights(query, key, attention_mask, self.dtype)  # [B, N, L, L]
            weights = nn.Dropout(config.attention_dropout)(weights, deterministic=deterministic)
            context = jnp.einsum("bnqk,bknd->bqnd", weights, value)
        context = context.reshape(batch, length, config.hidden_size)
        output = _dense(config.hidden_size, config, self.dtype, "output")(context)
        if config.model_type == "bert":
            output = nn.Dropout(config.hidden_dropout)(output, deterministic=deterministic)
        return output


class TransformerLayer(nn.Module):
    """Post-LN block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

    @nn.compact
    def __call__(self, x, attention_mask, *, deterministic: bool):
        config = self.config
        attended = SelfAttention(config, self.dtype, self.attention_impl, name="attention")(
            x, attention_mask, deterministic=deterministic
        )
        x = _layer_norm(config, self.dtype, "attention_layer_norm")(x + attended)
        hidden = exact_gelu(_dense(config.intermediate_size, config, self.dtype, "ffn_in")(x))
        hidden = _dense(config.hidden_size, config, self.dtype, "ffn_out")(hidden)
        hidden = nn.Dropout(config.hidden_dropout)(hidden, deterministic=deterministic)
        return _layer_norm(config, self.dtype, "output_layer_norm")(x + hidden)


class Encoder(nn.Module):
    """DistilBERT/BERT encoder. Inputs [B, L] int; returns every hidden state ([B, L, H] each).

    Returning all hidden states costs nothing under `jit`: the ones a pooler does not read are
    dead code that XLA removes.
    """

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    attention_impl: str = "xla"

    def setup(self):
        if self.attention_impl not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention_impl {self.attention_impl!r} is not one of {ATTENTION_IMPLEMENTATIONS}")
        self.embeddings = Embeddings(self.config, self.dtype)
        self.layers = [
            TransformerLayer(self.config, self.dtype, self.attention_impl, name=f"layer_{index}")
            for index in range(self.config.num_layers)
        ]

    def __call__(
        self, input_ids, attention_mask, token_type_ids: Optional[jax.Array] = None, *, deterministic: bool = True
    ) -> EncoderOutput:
        x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic)
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, attention_mask, deterministic=deterministic)
            hidden_states.append(x)
        return EncoderOutput(last_hidden_state=x, hidden_states=tuple(hidden_states))

    def word_embedding_table(self) -> jax.Array:
        """[V, H]: the input embeddings, which the MLM head reuses as its (tied) decoder."""
        return self.embeddings.variables["params"]["word_embeddings"]["embedding"]
