"""hair_jax.evaluate: crop, per-set means, table."""

import collections

from flax import nnx
import jax.numpy as jnp
import numpy as np

from hair_jax import evaluate

Image = collections.namedtuple("Image", "degraded clean")


class _Scale(nnx.Module):
    """A one-parameter restorer: enough to check the evaluation plumbing."""

    def __init__(self, scale):
        self.scale = nnx.Param(jnp.asarray(scale, jnp.float32))

    def __call__(self, x):
        return x * self.scale


def test_evaluate_rows_and_table():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (3, 20, 24, 3)).astype(np.float32)
    sets = {"dark": [Image(c * 0.5, c) for c in clean], "same": [Image(c, c) for c in clean[:1]]}
    rows = evaluate.evaluate(_Scale(2.0), sets, max_images=2)
    assert [r.name for r in rows] == ["dark", "same"]
    assert rows[0].num_images == 2 and rows[1].num_images == 1
    assert rows[0].restored_psnr > 90 > rows[0].degraded_psnr  # x2 undoes x0.5
    assert rows[1].restored_psnr < rows[1].degraded_psnr
    table = evaluate.format_table(rows)
    assert "degraded PSNR" in table and "dark" in table
