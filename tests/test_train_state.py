"""Tests of hair_jax.train.state: the learning-rate schedule and its length."""

import numpy as np
import train_helpers

from hair_jax.train import state as state_lib


def test_schedule_warmup_cosine_values():
    config = train_helpers.tiny_config(num_steps=1000, warmup_steps=100, learning_rate=2e-4)
    lr = state_lib.make_schedule(config.train)
    np.testing.assert_allclose(float(lr(0)), 0.0)
    np.testing.assert_allclose(float(lr(50)), 1e-4, rtol=1e-6)  # mid-warmup
    np.testing.assert_allclose(float(lr(100)), 2e-4, rtol=1e-6)  # warmup end
    np.testing.assert_allclose(float(lr(550)), 1e-4, rtol=1e-5)  # cosine middle
    np.testing.assert_allclose(float(lr(1000)), 0.0, atol=1e-12)  # end


def test_epoch_configs_convert_to_steps():
    from configs import res_hair_3d  # pylint: disable=g-import-not-at-top

    config = res_hair_3d.get_config()
    assert state_lib.schedule_steps(config.train) == (150 * 3486, 15 * 3486)
    config.train.num_epochs = 10  # the steps follow the epochs
    assert config.train.num_steps == 10 * 3486
    lr = state_lib.make_schedule(config.train)
    # The cosine reaches 0 at the real end, not at a hard-coded epoch.
    np.testing.assert_allclose(float(lr(10 * 3486)), 0.0, atol=1e-12)
    assert float(lr(10 * 3486 - 100)) > 0
