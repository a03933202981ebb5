"""SimCSE's auxiliary MLM loss: the sharded step against HF PyTorch's masked-LM head.

The reference takes the masks the step draws (`objective.mlm_inputs`, a pure function of the
step key and the global example index) but nothing else from the project: HF's
`BertForMaskedLM` loaded from the same folder, its decoder untied as in SimCSE's `BertForCL`
(whose `lm_head` is not tied by transformers, `get_output_embeddings` being None), the SimCSE
loss and the MLM cross-entropy written in torch, targets read from the unmasked batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from helpers import SENTENCES, save_tiny_hf_model

TEMPERATURE, MLM_WEIGHT, MLM_PROBABILITY = 0.1, 0.3, 0.3
NUM_VIEWS = 2


@pytest.fixture(scope="module")
def mlm_model_dir(tmp_path_factory):
    return save_tiny_hf_model(tmp_path_factory.mktemp("mlm_bert"), "bert", head="mlm", seed=2, weight_std=0.3)


def batch_of(tokenizer) -> dict:
    sentences = (SENTENCES + SENTENCES)[:8]  # 8 examples: one per simulated device
    encoded = tokenizer(sentences, padding="max_length", max_length=16, return_tensors="np")
    return {
        name: encoded[name].astype(np.int32)[:, None, :] for name in ("input_ids", "attention_mask", "token_type_ids")
    }  # [B, 1, L]


def torch_reference(model_dir, batch: dict, masked_ids: np.ndarray, selected: np.ndarray):
    """contrastive + w · MLM, value and gradients, in PyTorch (dropout off, whole batch at once)."""
    import transformers

    model = transformers.BertForMaskedLM.from_pretrained(str(model_dir)).eval()
    predictions = model.cls.predictions
    # SimCSE's BertForCL: the decoder is a matrix of its own, starting from the checkpoint's (tied) value.
    predictions.decoder.weight = torch.nn.Parameter(model.bert.embeddings.word_embeddings.weight.detach().clone())
    tensor = lambda a: torch.tensor(np.asarray(a), dtype=torch.long)
    ids, mask, types = (tensor(batch[k][:, 0]) for k in ("input_ids", "attention_mask", "token_type_ids"))

    def mean_pool(hidden):
        weights = mask[..., None].float()
        return (hidden * weights).sum(1) / weights.sum(1)

    z = mean_pool(model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state)
    cosine = torch.nn.functional.cosine_similarity(z[:, None], z[None], dim=-1) / TEMPERATURE
    contrastive = torch.nn.functional.cross_entropy(cosine, torch.arange(len(z)))
    # The MLM rows are the views, example-major: row 2i + v is view v of example i.
    rows = lambda a: a.repeat_interleave(NUM_VIEWS, dim=0)
    hidden = model.bert(
        input_ids=tensor(masked_ids), attention_mask=rows(mask), token_type_ids=rows(types)
    ).last_hidden_state
    logits = predictions(hidden)  # [R, L, V]
    where = torch.tensor(selected)
    mlm = torch.nn.functional.cross_entropy(logits[where], rows(ids)[where])  # targets: the original tokens
    loss = contrastive + MLM_WEIGHT * mlm
    loss.backward()
    gradients = {name: p.grad.numpy().copy() for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), mlm.item(), gradients


def test_sharded_mlm_step_value_and_gradient_equal_hf_masked_lm(mlm_model_dir):
    from distilface_jax.interop import hf
    from distilface_jax.models.sentence_model import SentenceEncoder
    from distilface_jax.training import sharding
    from distilface_jax.training.objective import LossConfig, MlmVocabulary, global_loss, mlm_inputs

    loaded = hf.load_pretrained(str(mlm_model_dir), with_mlm_head=True)
    config = loaded.config.replace(hidden_dropout=0.0, attention_dropout=0.0)
    tokenizer = loaded.tokenizer
    loss_config = LossConfig(
        temperature=TEMPERATURE, do_mlm=True, mlm_weight=MLM_WEIGHT, mlm_probability=MLM_PROBABILITY
    )
    vocabulary = MlmVocabulary.of(tokenizer, config.vocab_size)
    batch = batch_of(tokenizer)
    step_key = jax.random.fold_in(jax.random.key(5), 3)
    model = SentenceEncoder(config, pooler="avg", with_mlm_head=True)
    mesh = sharding.make_mesh()
    assert mesh.devices.size == 8
    value_and_grad = jax.jit(
        jax.value_and_grad(
            lambda params, batch: global_loss(
                params,
                batch,
                step_key,
                model=model,
                mesh=mesh,
                num_views=NUM_VIEWS,
                loss_config=loss_config,
                deterministic=True,
                mlm_vocabulary=vocabulary,
            ),
            has_aux=True,
        )
    )
    (loss, metrics), grads = value_and_grad(loaded.params, sharding.global_batch(batch, mesh))

    _, masked_ids, labels, _ = jax.jit(lambda b: mlm_inputs(b, step_key, 0, NUM_VIEWS, loss_config, vocabulary))(
        batch
    )  # one device, whole batch
    selected = np.asarray(labels) != -100
    assert selected.sum() > 10 and (np.asarray(masked_ids)[selected] == tokenizer.mask_token_id).any()
    expected_loss, expected_mlm, expected = torch_reference(mlm_model_dir, batch, np.asarray(masked_ids), selected)

    np.testing.assert_allclose(float(metrics["mlm_loss"]), expected_mlm, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
    grads = jax.device_get(grads)
    ours = {
        f"bert.{name}": value
        for name, value in hf.to_hf_state_dict(config, grads).items()
        if not name.startswith("pooler.")
    }  # avg pooling: no MLP head in the loss
    head = grads["mlm_head"]
    ours.update(
        {
            "cls.predictions.transform.dense.weight": head["transform"]["kernel"].T,
            "cls.predictions.transform.dense.bias": head["transform"]["bias"],
            "cls.predictions.transform.LayerNorm.weight": head["layer_norm"]["scale"],
            "cls.predictions.transform.LayerNorm.bias": head["layer_norm"]["bias"],
            "cls.predictions.decoder.weight": head["decoder"].T,
            "cls.predictions.bias": head["bias"],
        }
    )
    assert set(ours) == set(expected), set(ours) ^ set(expected)
    # One absolute tolerance for all: attention key biases have an exactly zero true gradient, so
    # both sides hold float noise there, which a per-tensor relative tolerance would compare.
    scale = max(float(np.abs(reference).max()) for reference in expected.values())
    for name, reference in expected.items():
        np.testing.assert_allclose(ours[name], reference, atol=1e-5 * scale, rtol=0, err_msg=name)


def test_step_masking_statistics_on_a_large_sample():
    """80/10/10 of 15%, over ~140k eligible tokens drawn as the step draws them (per example and view)."""
    from distilface_jax.training.objective import LossConfig, MlmVocabulary, mlm_inputs

    vocab, mask_id, specials = 1000, 4, (0, 1, 2, 3, 4)
    rng = np.random.default_rng(0)
    count, length = 2048, 64
    lengths = rng.integers(8, length + 1, size=count)
    ids = rng.integers(5, vocab, size=(count, length))
    real = np.arange(length)[None] < lengths[:, None]
    ids[:, 0], ids[np.arange(count), lengths - 1] = 2, 3
    ids = np.where(real, ids, 0)
    batch = {"input_ids": jnp.asarray(ids[:, None], jnp.int32), "attention_mask": jnp.asarray(real[:, None], jnp.int32)}
    loss_config, vocabulary = LossConfig(do_mlm=True), MlmVocabulary(vocab, specials, mask_id)
    rows, masked, labels, _ = jax.jit(lambda b: mlm_inputs(b, jax.random.key(0), 0, 2, loss_config, vocabulary))(batch)
    original, masked, labels = np.asarray(rows["input_ids"]), np.asarray(masked), np.asarray(labels)
    eligible = np.asarray(rows["attention_mask"]).astype(bool) & ~np.isin(original, specials)
    selected = labels != -100
    assert not (selected & ~eligible).any() and (labels[selected] == original[selected]).all()
    assert (masked[~selected] == original[~selected]).all()
    n = eligible.sum()
    assert n > 130_000
    # Tolerances ≈ 5 binomial standard deviations.
    assert abs(selected.sum() / n - 0.15) < 5 * np.sqrt(0.15 * 0.85 / n)
    chosen = selected.sum()
    as_mask = (masked[selected] == mask_id).mean()
    kept = (masked[selected] == original[selected]).mean()
    replaced = 1.0 - as_mask - kept
    assert abs(as_mask - 0.8) < 5 * np.sqrt(0.8 * 0.2 / chosen)
    # A random id equals the original with p 1/vocab: kept ≈ 0.1 + 0.1/vocab.
    assert abs(kept - (0.1 + 0.1 / vocab)) < 5 * np.sqrt(0.09 / chosen)
    assert abs(replaced - 0.1) < 5 * np.sqrt(0.09 / chosen)
    # The two views of an example are masked independently (different keys), as are examples.
    first, second = selected[0::2], selected[1::2]
    both = eligible[0::2]
    agreement = (first == second)[both].mean()
    assert abs(agreement - (0.15**2 + 0.85**2)) < 0.01
