"""The train step and inference lower for CUDA and TPU from this CPU.

`jax.export` with `platforms=` lowers a function for a backend that is not
present, so a construct that cannot run there (a CPU-only custom call, a
primitive without a lowering) fails here instead of on the user's
accelerator. Each platform is lowered with the model it would build
(`models.PLATFORM_DEFAULTS`), and the checks confirm those choices reached
the program: the GPU step is unrolled (no while loop), the TPU step scans.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers
from flax import nnx

from hair_jax.nn import models

PLATFORMS = ["cuda", "tpu"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_sharded_train_step_lowers_for(platform, tmp_path):
    out = tmp_path / "facts.json"
    train_helpers.run_helper("lower", platform, out, devices=4, timeout=600)
    facts = json.loads(out.read_text())
    assert facts["platforms"] == [platform]
    assert facts["nr_devices"] == 4
    assert facts["sharded_params"] > 0  # some parameters really split over 'model'
    choice = models.PLATFORM_DEFAULTS[models.platform_kind(platform)]
    assert {k: facts["resolved"][k] for k in choice} == choice
    # Loops come only from levels of 2+ blocks when scanned, and from the
    # CPU depthwise form, which neither accelerator uses.
    assert choice["conv_impl"] == "fast"
    if choice["scan_blocks"]:
        assert facts["while_loops"] > 0
    else:
        assert facts["while_loops"] == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_inference_lowers_for(platform):
    model = models.build_model("tiny", platform=platform)
    graphdef, state = nnx.split(model)

    @jax.jit
    def restore(state, x):
        return jnp.clip(nnx.merge(graphdef, state)(x), 0.0, 1.0)

    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    exported = jax.export.export(restore, platforms=(platform,))(state, x)
    assert exported.platforms == (platform,)
    assert exported.out_avals[0].shape == (1, 64, 64, 3)
    # The same function still runs here, so lowering did not change its meaning.
    image = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    cpu = jax.jit(lambda s, x: jnp.clip(nnx.merge(graphdef, s)(x), 0.0, 1.0))(state, image)
    assert cpu.shape == (1, 64, 64, 3)


def test_auto_options_resolve_per_platform():
    cfg = models.get_config("tiny")
    assert (cfg.conv_impl, cfg.remat, cfg.scan_blocks) == ("auto", "auto", "auto")
    for platform, kind in [("cpu", "cpu"), ("cuda", "gpu"), ("gpu", "gpu"), ("tpu", "tpu")]:
        got = cfg.resolved(platform)
        want = models.PLATFORM_DEFAULTS[kind]
        assert (got.conv_impl, got.remat, got.scan_blocks) == tuple(want.values())
    # Explicit settings win over the platform's choice.
    fixed = models.get_config("tiny", remat="none", scan_blocks="False", conv_impl="lax")
    assert fixed.resolved("cpu") == fixed
    assert fixed.scan_blocks is False
    # The model computes with the platform's choice but records "auto".
    model = models.build_model("tiny", platform="gpu")
    assert model.config == cfg
    assert model.decoder_level1.scan is False and model.decoder_level1.remat == "none"
    assert models.build_model("tiny", platform="cpu").decoder_level1.remat == "block"


def test_bad_speed_options_are_rejected():
    with pytest.raises(ValueError, match="scan_blocks must be True, False or 'auto'"):
        models.get_config("tiny", scan_blocks="sometimes")
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        models.get_config("tiny", conv_impl="cudnn")
