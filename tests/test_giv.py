"""hair_jax.evaluation.giv: probes, GIVs and selectors, the separation measure, the plots."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

import hair_jax
from hair_jax.evaluation import giv
from hair_jax.nn import models

CKPT = Path(__file__).parent / "data" / "hair_dim16_ref.ckpt"


@pytest.fixture(scope="module")
def tiny():
    """The tiny Res-HAIR of the parity fixture (the reference's initial weights)."""
    return hair_jax.load_torch_checkpoint(CKPT)


def test_nearest_centroid_accuracy_counts_leave_one_out_hits():
    # Two tight clusters far apart: every point is nearest its own class mean.
    a = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    b = a + 10.0
    assert giv.nearest_centroid_accuracy(np.concatenate([a, b]), ["a"] * 3 + ["b"] * 3) == 1.0
    # Class x = {0, 2}, class y = {1, 3, 100} on a line. Leaving 0 out: x's mean
    # 2, y's 34.7, hit. Leaving 2 out: x's 0 (distance 2), y's 34.7, hit.
    # Leaving 1 out: y's 51.5, x's 1, miss. Leaving 3 out: y's 50.5, x's 1,
    # miss. Leaving 100 out: y's 2 (distance 98), x's 1 (99), hit.
    # Balanced: (2/2 + 1/3) / 2.
    points = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    assert giv.nearest_centroid_accuracy(points, ["x", "y", "x", "y", "y"]) == pytest.approx(2 / 3)
    # A class with one member cannot be left out: it counts as a miss.
    assert giv.nearest_centroid_accuracy(a[:3], ["p", "p", "q"]) == 0.5


def test_pca_of_points_on_a_line():
    t = np.linspace(-1, 1, 9)[:, None]
    points, ratio = giv.pca(np.concatenate([t, 2 * t, np.zeros_like(t)], axis=1) + 5.0)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(points[:, 0]), np.abs(t[:, 0]) * np.sqrt(5), rtol=1e-12)


def test_synthetic_probes_are_deterministic_and_labelled():
    probes = giv.synthetic_probes(per_task=3, size=64)
    assert [p.task for p in probes] == [
        t for t in ("denoise_15", "denoise_25", "denoise_50", "derain", "dehaze") for _ in range(3)
    ]
    assert {p.image.shape for p in probes} == {(64, 64, 3)}
    again = giv.synthetic_probes(per_task=3, size=64)
    for p, q in zip(probes, again):
        np.testing.assert_array_equal(p.image, q.image)
    strength = {
        t: np.mean([p.strength for p in probes if p.task == t])
        for t in ("denoise_15", "denoise_50")
    }
    assert strength["denoise_50"] < strength["denoise_15"] - 5  # sigma 50 is about 9.5 dB worse
    five = giv.synthetic_probes(per_task=1, size=64, five_task=True)
    assert [p.kind for p in five] == ["noise"] * 3 + ["rain", "haze", "blur", "low light"]


def test_collect_matches_the_model_per_image(tiny):
    # Two sizes, and 5 images of one size with a batch of 4: a padded batch.
    probes = giv.synthetic_probes(per_task=1, size=80)
    probes[1] = giv.Probe(probes[1].image[:72, :64], probes[1].task, probes[1].strength)
    gmap = giv.collect(tiny, probes[:1] + probes[2:] + probes[1:2], batch_size=4)
    order = probes[:1] + probes[2:] + probes[1:2]
    for i, p in enumerate(order):
        want = np.asarray(tiny.giv(jnp.asarray(p.image[None])))[0]
        np.testing.assert_allclose(gmap.givs[i], want, atol=1e-5)
    assert gmap.tasks == tuple(p.task for p in order)
    want = tiny.selectors(jnp.asarray(gmap.givs))
    assert list(gmap.selectors) == list(models.HYPER_LEVELS)
    for level, weights in gmap.selectors.items():
        assert weights.shape[:2] == (len(getattr(tiny, level).hsns), 5)
        np.testing.assert_allclose(weights, np.asarray(want[level]), atol=1e-6)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_collect_refuses_a_model_without_giv():
    model = hair_jax.build_model("tiny", arch="restormer")
    with pytest.raises(ValueError, match="Restormer has no GIV"):
        giv.collect(model, giv.synthetic_probes(per_task=1, size=64))


def test_plots_are_written_as_png(tiny, tmp_path):
    gmap = giv.collect(tiny, giv.synthetic_probes(per_task=4, size=64))
    fig = giv.plot_givs(gmap, title="tiny", use_tsne=True)
    # PCA and t-SNE rows (scikit-learn is a test dependency), type and strength columns.
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        f"GIV, {proj}, by degradation {what}"
        for proj in ("PCA", "t-SNE")
        for what in ("type", "strength")
    ]
    assert len(giv.plot_givs(gmap, use_tsne=False).axes) == 2 + 1  # two panels, one colour bar
    giv.save_figure(fig, str(tmp_path / "giv.png"))
    sel = giv.plot_selectors(gmap)
    assert [ax.get_title(loc="left").split(":")[0] for ax in sel.axes[:5]] == list(
        models.HYPER_LEVELS
    )
    for ax in sel.axes[:5]:  # one scale for every level, white at the uniform weight
        boxes = int(ax.get_title(loc="left").split(" x ")[1].split()[0])
        norm = ax.images[0].norm
        assert (norm.vmin, norm.vcenter, norm.vmax) == (0.0, 1 / boxes, 1.0)
        assert "entropy" in ax.get_title(loc="left")
    giv.save_figure(sel, str(tmp_path / "sel.png"))
    for name in ("giv.png", "sel.png"):
        with PIL.Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.width > 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["giv.png", "sel.png"]


def test_selector_entropy_hand_worked():
    selectors = {
        # uniform over 4 boxes: 1; one-hot: 0; half/half over 4: log 2 / log 4 = 0.5
        "a": np.array([[[0.25] * 4, [1, 0, 0, 0], [0.5, 0.5, 0, 0]]]),
        "b": np.array([[[0.5, 0.5]]]),  # uniform over 2 boxes: 1
        "c": np.ones((3, 3, 1)),  # one box: no choice, left out
    }
    assert giv.selector_entropy(selectors) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert giv.selector_entropy({"c": np.ones((1, 2, 1))}) is None
