"""No blind DAC: every HAIR model's GIV depends on the image at the sizes it is used at.

Every HAIR variant and every config that trains one is built (random
initialisation) and given three different photos at its smallest accepted
size and at its config's training patch: their GIVs must differ clearly.
A DAC whose last GroupNorm sees a 1x1 map with one channel per group gives
all three the same GIV up to rounding (relative spread ~1e-10).
"""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hair_jax.data import synthetic
from hair_jax.evaluation import giv
from hair_jax.nn import models
from hair_jax.train.config import model_config

HAIR = ("res_hair", "naf_hair")
CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py"))


def _cases():
    """(name, ModelConfig, sizes): each HAIR variant at its minimum, each config also at its patch."""
    cases = {}
    for name, cfg in models.VARIANTS.items():
        if cfg.arch in HAIR:
            cases[cfg] = [name, set()]
    for name in CONFIGS:
        module = importlib.import_module(f"configs.{name}")
        if not hasattr(module, "get_config"):
            continue
        config = module.get_config()
        cfg = model_config(config)
        if cfg.arch in HAIR:
            entry = cases.setdefault(cfg, [f"configs/{name}.py", set()])
            entry[1].add(config.train.patch_size)
    return [pytest.param(cfg, sizes, id=name) for cfg, (name, sizes) in cases.items()]


def _photos(size):
    crops = []
    for name in ("astronaut", "coffee", "chelsea"):
        photo = synthetic.load_photo(name)
        crops.append(photo[:size, :size].astype(np.float32) / 255.0)
    return jnp.asarray(np.stack(crops))


@pytest.mark.parametrize("cfg, patches", _cases())
def test_different_photos_give_different_givs(cfg, patches):
    model = models.build_model(cfg, rngs=nnx.Rngs(0))
    smallest = model.min_size
    for size in sorted({smallest, *patches}):
        givs = np.asarray(jax.jit(lambda x: model.giv(x))(_photos(size)), np.float64)
        spread = giv.relative_spread(givs)
        assert spread > 1e-3, f"{size} px: relative GIV spread {spread:.1e}"
        distances = [np.linalg.norm(givs[i] - givs[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
        assert min(distances) > 1e-3 * np.linalg.norm(givs, axis=1).mean(), f"{size} px"
    # Below the minimum the model refuses, in one line.
    with pytest.raises(ValueError, match=f"at least {smallest}"):
        model.giv(_photos(smallest // 2))


def test_the_flat_warning_catches_a_blind_dac_and_skips_tsne():
    flat = giv.GivMap(
        givs=np.ones((6, 4)) + 1e-9 * np.arange(24).reshape(6, 4),
        tasks=("denoise_15", "derain", "dehaze") * 2,
        strengths=np.zeros(6, np.float32),
        selectors={},
    )
    warning = giv.flat_warning(flat)
    assert warning.startswith("warning: the 6 GIVs are one point (relative spread")
    assert "\n" not in warning
    figure = giv.plot_givs(flat)
    assert len(figure.axes) == 3  # PCA row (2 panels + colour bar): no t-SNE row
    varied = giv.GivMap(
        givs=np.random.default_rng(0).random((6, 4)),
        tasks=flat.tasks,
        strengths=flat.strengths,
        selectors={},
    )
    assert giv.flat_warning(varied) is None
