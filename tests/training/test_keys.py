"""One key style without a new random stream: the train state's key data are the bits that the
legacy `jax.random.PRNGKey(seed)` wrote into old checkpoints, and a step's key is the one the
old code derived from them, so an old workdir resumes onto the same dropout and MLM masks."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from distilface_jax.training.keys import state_key_data, step_key


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1])
def test_state_key_data_are_the_legacy_prngkey_bits(seed):
    legacy = jax.random.PRNGKey(seed)  # what an old checkpoint's progress/rng holds
    ours = state_key_data(seed)
    assert ours.dtype == legacy.dtype and ours.shape == legacy.shape
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(legacy))


def test_step_key_is_the_old_derivation_from_saved_bits():
    saved = jax.random.PRNGKey(7)
    old_code = jax.random.fold_in(jax.random.wrap_key_data(saved), 3)  # the step's key as the old step drew it
    np.testing.assert_array_equal(jax.random.key_data(step_key(saved, 3)), jax.random.key_data(old_code))
    assert jax.dtypes.issubdtype(step_key(saved, 3).dtype, jax.dtypes.prng_key)  # a typed key
