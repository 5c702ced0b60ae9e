"""hair_jax.evaluation.selection: the measures of whether HAIR selects."""

import data_helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hair_jax import inference
from hair_jax.evaluation import metrics, protocol, selection
from hair_jax.nn import models

UNIFORM = np.full((1, 4, 3), 1 / 3)
ONE_HOT = np.eye(3)[[0, 1, 2, 0]][None]  # [1 block, 4 images, 3 boxes]


def test_entropy_is_one_for_uniform_zero_for_one_hot_and_skips_single_boxes():
    single = np.ones((2, 4, 1))
    assert float(selection.normalised_entropy({"a": UNIFORM, "b": single})) == pytest.approx(1.0)
    assert float(selection.normalised_entropy({"a": ONE_HOT})) == pytest.approx(0.0)
    half = np.array([[[0.5, 0.5, 0.0]]])
    assert float(selection.normalised_entropy({"a": half})) == pytest.approx(np.log(2) / np.log(3))
    assert selection.normalised_entropy({"b": single}) is None


def test_type_information_counts_how_much_the_type_fixes_the_box():
    types = jnp.array([0, 1, 2, 0])
    # Each type its own box: I = H(box) = H(1/2, 1/4, 1/4), normalised by log 3.
    expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)) / np.log(3)
    assert float(selection.type_information({"a": ONE_HOT}, types)) == pytest.approx(expected)
    assert float(selection.type_information({"a": UNIFORM}, types)) == pytest.approx(0.0)
    # Sharp but type-blind: every image in box 0.
    blind = np.eye(3)[[0, 0, 0, 0]][None]
    assert float(selection.type_information({"a": blind}, types)) == pytest.approx(0.0, abs=1e-7)
    # Task ids map to types: the three noise levels are one type.
    np.testing.assert_array_equal(selection.task_types(jnp.arange(7)), [0, 0, 0, 1, 2, 3, 4])


def test_batch_information_is_sharp_and_balanced():
    balanced = np.eye(3)[[0, 1, 2]][None]
    assert float(selection.batch_information({"a": balanced})) == pytest.approx(1.0)
    assert float(selection.batch_information({"a": UNIFORM})) == pytest.approx(0.0, abs=1e-7)
    collapsed = np.eye(3)[[1, 1, 1]][None]
    assert float(selection.batch_information({"a": collapsed})) == pytest.approx(0.0, abs=1e-7)


def test_logit_spread_is_the_std_over_images():
    logits = {"a": np.array([[[0.0, 1.0], [2.0, 1.0]]])}  # [1 block, 2 images, 2 boxes]
    assert float(selection.logit_spread(logits)) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tiny():
    return models.build_model("tiny", rngs=nnx.Rngs(3))


def test_uniform_model_gives_uniform_selectors_and_leaves_the_model(tiny):
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
    giv = tiny.giv(x)
    before = tiny.selectors(giv)
    uniform = selection.uniform_model(tiny)
    for name, weights in uniform.selectors(giv).items():
        np.testing.assert_allclose(weights, 1 / weights.shape[-1], atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(tiny.selectors(giv)[name], before[name])


def test_box_similarity_is_one_for_equal_boxes_and_low_for_independent(tiny):
    assert -0.2 < selection.box_similarity(tiny) < 0.2  # independent draws
    shared = models.build_model("tiny", bank_init="shared", rngs=nnx.Rngs(3))
    assert selection.box_similarity(shared) > 0.98  # shared + 0.1 x own draw
    one_box = models.build_model("tiny", num_box=(1,) * 5)
    assert selection.box_similarity(one_box) is None


def test_uniform_ablation_is_the_psnr_lost_with_uniform_selectors(tiny):
    sets = data_helpers.fake_test_sets()
    predictor = inference.Predictor(tiny)
    state = predictor.state
    drop = selection.uniform_ablation(predictor, sets)
    assert predictor.state is state  # its own weights back
    own = protocol.evaluate_sets(inference.Predictor(tiny), sets)
    uniform = protocol.evaluate_sets(inference.Predictor(selection.uniform_model(tiny)), sets)
    for a, b in zip(own, uniform):
        assert drop[a.name] == pytest.approx(a.restored_psnr - b.restored_psnr, abs=1e-6)
    assert drop["average"] == pytest.approx(
        protocol.average(own).restored_psnr - protocol.average(uniform).restored_psnr, abs=1e-6
    )
    assert drop["average"] != 0.0  # an untrained bank's boxes differ


def test_giv_swap_feeds_another_degradations_giv(tiny):
    sets = data_helpers.fake_test_sets()
    swap = selection.giv_swap(inference.Predictor(tiny), sets)
    pairs = selection.swap_pairs(sets)
    for name, j, donor, k in pairs[::3]:  # eager model calls are slow: one image of two sets
        x, clean = (jnp.asarray(a[None]) for a in (sets[name][j].degraded, sets[name][j].clean))
        donor_giv = tiny.giv(jnp.asarray(sets[donor][k].degraded[None]))
        swapped = jnp.clip(tiny(x, giv=donor_giv), 0, 1)
        own = jnp.clip(tiny(x), 0, 1)
        assert swap[name]["images"][j] == pytest.approx(
            float(metrics.psnr(swapped, clean)[0]), abs=1e-4
        )
        assert swap[name]["own_images"][j] == pytest.approx(
            float(metrics.psnr(own, clean)[0]), abs=1e-4
        )
    assert swap["derain"]["donor"] == "dehaze"
    assert swap["derain"]["drop"] == pytest.approx(
        swap["derain"]["own"] - swap["derain"]["swapped"]
    )


def test_giv_swap_pairs_each_set_with_another_degradation():
    sets = data_helpers.fake_test_sets()
    assert selection.swap_pairs(sets) == [
        ("denoise_15", 0, "derain", 0),
        ("denoise_15", 1, "derain", 1),
        ("derain", 0, "dehaze", 0),
        ("derain", 1, "dehaze", 1),
        ("dehaze", 0, "denoise_15", 0),
        ("dehaze", 1, "denoise_15", 1),
    ]
    with pytest.raises(ValueError, match="no test set of another degradation than 'derain'"):
        selection.swap_pairs({"derain": sets["derain"]})
