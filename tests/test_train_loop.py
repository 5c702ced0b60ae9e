"""Tests of hair_jax.train.loop: bitwise resume, non-finite loss."""

import os

import numpy as np
import pytest
import train_helpers

from hair_jax import train

train_helpers.use_compilation_cache()


def test_resume_is_bitwise_identical(tmp_path):
    straight, _ = train_helpers.train_tiny(tmp_path / "a")
    first, _ = train_helpers.train_tiny(tmp_path / "b", max_steps_per_run=2)
    assert int(first.step) == 2
    resumed, _ = train_helpers.train_tiny(tmp_path / "b")
    assert int(resumed.step) == int(straight.step) == train_helpers.NUM_STEPS
    a = train_helpers.leaves((straight.params, straight.opt_state, straight.rng, straight.ema))
    b = train_helpers.leaves((resumed.params, resumed.opt_state, resumed.rng, resumed.ema))
    assert len(a) == len(b) > 20
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


# The loss turns NaN at step 3. With log_every=5 the loop syncs with the device
# only on log/save steps, so it notices at step 4, still before saving it.
@pytest.mark.parametrize("log_every,caught_at", [(1, 3), (5, 4)])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, log_every, caught_at):
    config = train_helpers.tiny_config(checkpoint_every=2, log_every=log_every)
    with pytest.raises(FloatingPointError, match=rf"Non-finite loss.*step {caught_at}"):
        train.train_and_evaluate(
            config,
            str(tmp_path),
            test_sets={},
            make_loader=train_helpers.fake_loader_factory(nan_at=3),
        )
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    _, state = train.restore_train_state(config, str(tmp_path))
    assert int(state.step) == 2
    assert all(np.isfinite(x).all() for x in train_helpers.leaves(state.params))
