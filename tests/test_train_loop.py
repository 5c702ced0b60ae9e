"""Tests of hair_jax.train.loop: bitwise resume, non-finite loss, evaluators."""

import json
import os

import data_helpers
import numpy as np
import pytest
import train_helpers

from hair_jax import train
from hair_jax.evaluation import protocol

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


def test_evaluators_run_during_training_and_match_the_final_evaluation(tmp_path, capsys):
    config = train_helpers.tiny_config()
    config.evals.psnr.update(every=2, max_images=1)
    config.evals.giv.every = 2  # the test Restormer has no GIV: it logs nothing
    config.eval.max_images_per_set = 1
    sets = data_helpers.fake_test_sets(16)
    _, rows = train.train_and_evaluate(
        config, str(tmp_path), make_loader=train_helpers.fake_loader_factory(), test_sets=sets
    )
    lines = (tmp_path / "evals.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    assert [(e["step"], e["evaluator"]) for e in logged] == [(2, "psnr"), (4, "psnr")]
    assert logged[0]["average_psnr"] != logged[1]["average_psnr"]
    # At the last step, the same model as the final evaluation (EMA weights): same numbers.
    assert logged[1]["psnr"] == {r.name: r.restored_psnr for r in rows}
    assert logged[1]["average_psnr"] == protocol.average(rows).restored_psnr
    out = capsys.readouterr().out
    assert f"Step 4, psnr: psnr/denoise_15 {rows[0].restored_psnr:.3f}" in out


def test_an_unknown_evaluator_is_a_config_error(tmp_path):
    config = train_helpers.tiny_config()
    config.evals.psnrs = {"every": 2}
    with pytest.raises(train.ConfigError, match=r"^config.evals.psnrs: unknown evaluator; known"):
        train.train_and_evaluate(config, str(tmp_path), test_sets={})
    assert not os.listdir(tmp_path)
