"""A backbone written and registered here, from this file alone, goes through the package.

docs/architecture.md's recipe for a new backbone, followed to the letter:
a config dataclass, a model with the `registry.HairModel` members, one
`registry.register` call. It then trains with `train_and_evaluate`, exports
to a `.jaxexport` that restores an image file with hair-restore, and draws
its GIV picture with eval.py's function; no library file knows of it.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers
from flax import nnx

from hair_jax import evaluate, export, loading, restore
from hair_jax import train as hair_train
from hair_jax.data import synthetic
from hair_jax.io import artifacts, images
from hair_jax.nn import dac, hyper, layers, models, registry


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """A conv stem, a DAC, one HAIR level of residual conv blocks, a conv head."""

    arch: str = "toy_hair"
    dim: int = 8
    num_blocks: int = 2
    num_box: int = 3
    # What the training loss reads of a HAIR config (registry.Config).
    giv_classes: int = 0
    router_temperature: float | None = None
    learned_temperature: bool = False
    type_routing: float = 0.0

    def __post_init__(self):
        if self.dim % 4:
            raise ValueError(f"dim must be a multiple of 4, got {self.dim}")

    @property
    def giv_dim(self) -> int:
        return 2 * self.dim

    def resolved(self, platform=None):
        return self  # nothing is chosen per backend


class ToyBlock(nnx.Module):
    # Depthwise 3x3 and 1x1, as in every built-in block: a generated dense
    # 3x3 conv runs as a grouped conv over the batch, which a .jaxexport
    # with a symbolic batch cannot lower (docs/architecture.md).
    def __init__(self, dim, rngs):
        self.conv1 = layers.Conv2d(dim, dim, 3, groups=dim, use_bias=True, rngs=rngs)
        self.conv2 = layers.Conv2d(dim, dim, 1, use_bias=True, rngs=rngs)

    def __call__(self, x):
        return x + self.conv2(jax.nn.gelu(self.conv1(x)))


class ToyHAIR(nnx.Module):
    has_giv = True
    multiple = 4  # the DAC halves twice
    min_size = 16  # the DAC's last GroupNorm then sees 4x4 maps
    level_names = ("body",)

    def __init__(self, cfg, rngs):
        self.config = cfg
        self.stem = layers.Conv2d(3, cfg.dim, 3, use_bias=True, rngs=rngs)
        self.dac = dac.DAC(
            cfg.dim, cfg.dim, cfg.giv_dim, num_stages=2, blocks_per_stage=1, groups=4, rngs=rngs
        )
        self.body = hyper.HyperLevel(
            lambda r: ToyBlock(cfg.dim, r),
            cfg.num_blocks,
            cfg.num_box,
            cfg.giv_dim,
            nnx.PathContains("kernel"),
            rngs=rngs,
        )
        self.head = layers.Conv2d(cfg.dim, 3, 3, use_bias=True, rngs=rngs)

    def features(self, x, giv=None, use_giv=None):
        h, w = x.shape[1:3]
        # One comparison per side: min(h, w) is undecidable on symbolic export sizes.
        if h % self.multiple or w % self.multiple or h < self.min_size or w < self.min_size:
            raise ValueError(f"ToyHAIR takes multiples of 4 of at least 16 px, got {h}x{w}")
        y = self.stem(x)
        giv = hyper.choose_giv(giv, use_giv, lambda: self.dac(y))
        return {"giv": giv, "output": x + self.head(self.body(y, giv))}

    def __call__(self, x, giv=None, use_giv=None):
        return self.features(x, giv, use_giv)["output"]

    def giv(self, x):
        return self.features(x)["giv"]

    def giv_logits(self, giv):
        raise ValueError("ToyHAIR has no GIV head")

    def selectors(self, giv):
        return {"body": self.body.selectors(giv)}

    def router_logits(self, giv):
        return {"body": self.body.logits(giv)}


@pytest.fixture
def toy_backbone():
    backbone = registry.register(
        registry.Backbone(
            "toy_hair",
            ToyConfig,
            lambda cfg, rngs: ToyHAIR(cfg, rngs),
            {"toy_hair_tiny": ToyConfig()},
            has_giv=True,
        )
    )
    yield backbone
    registry.unregister("toy_hair")


def test_registering_a_taken_name_fails_in_one_line(toy_backbone):
    with pytest.raises(ValueError, match="^backbone 'toy_hair': 'toy_hair' is already registered$"):
        registry.register(toy_backbone)
    with pytest.raises(ValueError, match="'tiny' is already registered"):
        registry.register(registry.Backbone("other", ToyConfig, ToyHAIR, {"tiny": ToyConfig()}))


def test_builtin_models_keep_the_contract():
    for variant, (multiple, min_size) in {
        "tiny": (8, 64),
        "restormer": (8, 8),
        "nafnet_tiny": (16, 16),
        "naf_hair_tiny": (16, 64),
    }.items():
        model = models.abstract_model(variant)
        assert (model.multiple, model.min_size) == (multiple, min_size), variant
        assert model.has_giv == registry.get(model.config.arch).has_giv, variant
        assert bool(model.level_names) == model.has_giv, variant


def test_a_toy_backbone_trains_exports_restores_and_draws_its_giv(
    toy_backbone, tmp_path, monkeypatch
):
    config = train_helpers.tiny_config(num_steps=2, checkpoint_every=2, ema_decay=0.0)
    config.model.variant = "toy_hair_tiny"
    config.model.overrides = {"num_box": 2}
    workdir = tmp_path / "run"
    state, _ = hair_train.train_and_evaluate(
        config, str(workdir), make_loader=train_helpers.fake_loader_factory(), test_sets={}
    )
    assert int(state.step) == 2

    loaded = loading.load_model(str(workdir))
    model = loaded.model
    assert isinstance(model, ToyHAIR) and model.config == ToyConfig(num_box=2)
    trained = nnx.merge(nnx.graphdef(model), state.params, state.rest)
    x = np.random.default_rng(0).uniform(0, 1, (2, 24, 28, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(jnp.asarray(x)), trained(jnp.asarray(x)))

    # A .jaxexport (checked against the model on export), then hair-restore with it.
    artifact = str(tmp_path / "toy.jaxexport")
    assert export.main([str(workdir), artifact]) == 0
    assert artifacts.read_artifact(artifact).level_names == ("body",)
    images.save_png(str(tmp_path / "in.png"), np.random.default_rng(1).uniform(0, 1, (30, 27, 3)))
    out = str(tmp_path / "out")
    assert restore.main([str(tmp_path / "in.png"), "--checkpoint", artifact, "--output", out]) == 0
    photo = images.read_image(str(tmp_path / "in.png")).pixels
    restored = images.read_image(str(tmp_path / "out" / "in.png")).pixels
    # hair-restore pads to multiples of its --bucket (64) and of the model's multiple.
    padded = np.pad(photo, ((0, 34), (0, 37), (0, 0)), mode="reflect")[None]
    want = np.clip(np.asarray(model(jnp.asarray(padded)))[0, :30, :27], 0, 1)
    np.testing.assert_allclose(restored, want, atol=0.51 / 255)  # 8 bits in, 8 bits out

    # The GIV picture, as eval.py --giv_plot draws it.
    data_dir = str(tmp_path / "tfds")
    synthetic.ensure_built(data_dir)
    monkeypatch.setenv("HAIR_DATA_DIR", data_dir)
    picture = tmp_path / "giv.png"
    evaluate.evaluate_checkpoint(
        str(workdir),
        test_sets=["synthetic_denoise_25", "synthetic_derain"],
        max_images=2,
        giv_plot=str(picture),
        progress=False,
        log=lambda _: None,
    )
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
