"""losses.py against independent references: SimCSE's PyTorch loss code and NumPy."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from distilface_jax.training import losses

# ----------------------------------------------------------------------------- references


def torch_simcse_loss(z1, z2, z3=None, temp=0.05, hard_negative_weight=0.0):
    """SimCSE's `cl_forward` loss, transcribed from princeton-nlp/SimCSE models.py."""
    sim = torch.nn.CosineSimilarity(dim=-1)
    cos_sim = sim(z1.unsqueeze(1), z2.unsqueeze(0)) / temp
    if z3 is not None:
        z1_z3_cos = sim(z1.unsqueeze(1), z3.unsqueeze(0)) / temp
        cos_sim = torch.cat([cos_sim, z1_z3_cos], 1)
    labels = torch.arange(cos_sim.size(0)).long()
    if z3 is not None:
        z3_weight = hard_negative_weight
        weights = torch.tensor(
            [
                [0.0] * (cos_sim.size(-1) - z1_z3_cos.size(-1))
                + [0.0] * i
                + [z3_weight]
                + [0.0] * (z1_z3_cos.size(-1) - i - 1)
                for i in range(z1_z3_cos.size(-1))
            ],
            dtype=cos_sim.dtype,
        )
        cos_sim = cos_sim + weights
    return torch.nn.CrossEntropyLoss()(cos_sim, labels)


def numpy_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def numpy_simcse_loss(z1, z2, z3=None, temp=0.05, w=0.0):
    def cos(a, b):
        a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
        b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
        return a @ b.T

    B = z1.shape[0]
    logits = cos(z1, z2) / temp
    if z3 is not None:
        logits = np.concatenate([logits, cos(z1, z3) / temp + w * np.eye(B)], axis=1)
    return -numpy_log_softmax(logits)[np.arange(B), np.arange(B)].mean()


def random_embeddings(B=8, H=16, seed=0, with_z3=True):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(B, H))
    z2 = z1 + 0.5 * rng.normal(size=(B, H))  # correlated positives: a realistic regime
    z3 = rng.normal(size=(B, H)) if with_z3 else None
    return z1, z2, z3


CASES = [  # (with hard negatives, w)
    (False, 0.0),
    (True, 0.0),
    (True, 1.5),
    (True, -2.0),
]


# ----------------------------------------------------------------------------- SimCSE


@pytest.mark.parametrize("with_z3,w", CASES)
def test_simcse_loss_value_and_grad_match_torch(with_z3, w):
    z1, z2, z3 = random_embeddings(with_z3=with_z3)
    args = [z1, z2] + ([z3] if with_z3 else [])

    t_args = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
    t_loss = torch_simcse_loss(*t_args, temp=0.05, hard_negative_weight=w)
    t_loss.backward()

    def f(*zs):
        return losses.simcse_loss(*zs, temperature=0.05, hard_negative_weight=w)[0]

    j_args = [jnp.asarray(a, jnp.float32) for a in args]
    loss, grads = jax.value_and_grad(f, argnums=tuple(range(len(args))))(*j_args)

    np.testing.assert_allclose(float(loss), t_loss.item(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(loss), numpy_simcse_loss(*args, w=w), rtol=1e-5, atol=1e-5)
    for g, t in zip(grads, t_args):
        np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_simcse_loss_casts_bfloat16_inputs_to_float32():
    z1, z2, z3 = random_embeddings()
    loss16, _ = losses.simcse_loss(*(jnp.asarray(a, jnp.bfloat16) for a in (z1, z2, z3)))
    assert loss16.dtype == jnp.float32
    ref = numpy_simcse_loss(*(np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in (z1, z2, z3)))
    np.testing.assert_allclose(float(loss16), ref, rtol=1e-4)


def test_simcse_metrics():
    z1, z2, _ = random_embeddings(B=6, with_z3=False)
    _, m = losses.simcse_loss(jnp.asarray(z1), jnp.asarray(z2))
    n1 = z1 / np.linalg.norm(z1, axis=-1, keepdims=True)
    n2 = z2 / np.linalg.norm(z2, axis=-1, keepdims=True)
    cos = n1 @ n2.T
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(float(m["positive_cosine"]), np.diag(cos).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["negative_cosine"]), cos[off].mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(m["accuracy"]), (cos.argmax(1) == np.arange(6)).mean())
    assert float(m["loss"]) == pytest.approx(numpy_simcse_loss(z1, z2), rel=1e-5)
    # Identical views: every anchor finds its positive.
    _, m = losses.simcse_loss(jnp.asarray(z1), jnp.asarray(z1))
    assert float(m["accuracy"]) == 1.0
    assert float(m["positive_cosine"]) == pytest.approx(1.0, abs=1e-6)


def test_zero_embedding_has_finite_gradient():
    z1, z2, z3 = random_embeddings(B=4)
    z1[2] = 0.0  # a dead row: torch's eps clamp makes its cosine 0, never NaN
    g = jax.grad(lambda *z: losses.simcse_loss(*z, hard_negative_weight=1.0)[0], argnums=(0, 1, 2))(
        *(jnp.asarray(a) for a in (z1, z2, z3))
    )
    assert all(np.isfinite(np.asarray(x)).all() for x in g)


@pytest.mark.parametrize("with_z3,w", [(False, 0.0), (True, 1.5)])
def test_local_shards_sum_to_global_loss_and_grad(with_z3, w):
    """Sum over simulated devices of the local loss / B == the global loss, value and grad."""
    B, num_shards = 12, 3
    b = B // num_shards
    z1, z2, z3 = (
        None if a is None else jnp.asarray(a, jnp.float32) for a in random_embeddings(B=B, with_z3=with_z3, seed=1)
    )
    kw = dict(temperature=0.05, hard_negative_weight=w)

    def global_loss(z1, z2, z3):
        return losses.simcse_loss(z1, z2, z3, **kw)[0]

    @functools.partial(jax.jit)  # offsets are traced, as under shard_map
    def sharded_loss(z1, z2, z3):
        total = 0.0
        all_sums = []
        for s in range(num_shards):
            offset = jnp.asarray(s * b)
            part, sums = losses.simcse_loss_local(z1[s * b : (s + 1) * b], z2, z3, anchor_offset=offset, **kw)
            total = total + part
            all_sums.append(sums)
        summed = jax.tree.map(lambda *x: sum(x), *all_sums)  # what psum would give
        return total / B, losses.finalize_metrics(summed)

    (ref, ref_m) = losses.simcse_loss(z1, z2, z3, **kw)
    got, got_m = sharded_loss(z1, z2, z3)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    for k in ref_m:
        np.testing.assert_allclose(float(got_m[k]), float(ref_m[k]), rtol=1e-5, atol=1e-6)

    argnums = (0, 1, 2) if with_z3 else (0, 1)
    g_ref = jax.grad(global_loss, argnums)(z1, z2, z3)
    g_got = jax.grad(lambda *a: sharded_loss(*a)[0], argnums)(z1, z2, z3)
    for a, c in zip(g_got, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-6)


def test_local_loss_places_hard_negative_weight_at_own_column():
    """Only anchor r's own hard negative (column B + offset + r) gets w."""
    B = 4
    z = jnp.eye(B)  # orthogonal rows: every cosine is 0 except identical rows
    # z3 == z1: each anchor's own hard negative has cos 1 like its positive.
    # With w → -inf the own hard negative vanishes and the loss is log(1 + e^-20 (B-1) + e^-20 B ...)
    loss_sum, _ = losses.simcse_loss_local(z[2:3], z, z, anchor_offset=2, temperature=1.0, hard_negative_weight=-1e9)
    # logits: positive 1, three zeros, hard negatives: three zeros and one (1 - 1e9).
    expected = -np.log(np.e / (np.e + 6.0))
    np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- MLM


def test_mlm_loss_matches_numpy():
    rng = np.random.default_rng(0)
    N, L, V = 3, 7, 11
    logits = rng.normal(size=(N, L, V)).astype(np.float32)
    labels = rng.integers(0, V, size=(N, L))
    labels[rng.random((N, L)) < 0.6] = -100
    loss, m = losses.mlm_loss(jnp.asarray(logits), jnp.asarray(labels))
    keep = labels != -100
    lp = numpy_log_softmax(logits.astype(np.float64))
    ref = -lp[keep, labels[keep]].mean()
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    assert float(m["mlm_num_tokens"]) == keep.sum()
    np.testing.assert_allclose(float(m["mlm_accuracy"]), (logits[keep].argmax(-1) == labels[keep]).mean(), rtol=1e-6)
    # Torch's CE with ignore_index gives the same number.
    t = torch.nn.functional.cross_entropy(
        torch.tensor(logits).reshape(-1, V), torch.tensor(labels).reshape(-1), ignore_index=-100
    )
    np.testing.assert_allclose(float(loss), t.item(), rtol=1e-5)


def test_mlm_loss_without_labels_is_zero_not_nan():
    loss, _ = losses.mlm_loss(jnp.zeros((2, 3, 5)), jnp.full((2, 3), -100))
    assert float(loss) == 0.0


SPECIALS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID, VOCAB = 4, 1000


def _fake_batch(N=256, L=64, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, L + 1, size=N)
    ids = rng.integers(5, VOCAB, size=(N, L))
    mask = np.arange(L)[None, :] < lengths[:, None]
    ids[:, 0] = 2  # [CLS]
    ids[np.arange(N), lengths - 1] = 3  # [SEP]
    ids[~mask] = 0  # [PAD]
    return jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)


def test_mask_tokens_statistics_and_specials():
    ids, mask = _fake_batch()
    fn = jax.jit(
        functools.partial(losses.mask_tokens, special_token_ids=SPECIALS, mask_token_id=MASK_ID, vocab_size=VOCAB)
    )
    masked, labels = map(np.asarray, fn(jax.random.key(0), ids, mask))
    ids, mask = np.asarray(ids), np.asarray(mask)
    assert masked.dtype == ids.dtype and labels.shape == ids.shape

    eligible = (mask == 1) & ~np.isin(ids, SPECIALS)
    selected = labels != -100
    # Never a special or padding position; labels are the original ids.
    assert not (selected & ~eligible).any()
    assert (masked[~selected] == ids[~selected]).all()
    assert (labels[selected] == ids[selected]).all()

    n_sel = selected.sum()
    assert abs(n_sel / eligible.sum() - 0.15) < 0.01  # ~8.6k eligible tokens
    frac_mask = (masked[selected] == MASK_ID).mean()
    frac_same = (masked[selected] == ids[selected]).mean()
    frac_other = 1 - frac_mask - frac_same
    assert abs(frac_mask - 0.8) < 0.03
    # Random replacements occasionally draw the original id (p 1/VOCAB): still ~10/10.
    assert abs(frac_same - 0.1) < 0.025 and abs(frac_other - 0.1) < 0.025

    # Deterministic in the key; a different key differs.
    again = np.asarray(fn(jax.random.key(0), jnp.asarray(ids), jnp.asarray(mask))[0])
    other = np.asarray(fn(jax.random.key(1), jnp.asarray(ids), jnp.asarray(mask))[0])
    assert (again == masked).all() and (other != masked).any()


def test_mask_tokens_probability_one_masks_every_eligible_token_in_3d():
    ids, mask = _fake_batch(N=8, L=16)
    ids3, mask3 = ids.reshape(4, 2, 16), mask.reshape(4, 2, 16)  # [N, K, L] works too
    _, labels = losses.mask_tokens(
        jax.random.key(3),
        ids3,
        mask3,
        special_token_ids=SPECIALS,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
        mlm_probability=1.0,
    )
    eligible = (np.asarray(mask3) == 1) & ~np.isin(np.asarray(ids3), SPECIALS)
    assert ((np.asarray(labels) != -100) == eligible).all()
