"""The run config's every field, with the reference recipe's values (`get_base_config`).

The reference (toummHus/HAIR train.py) trains with L1 loss and torch AdamW:
lr 2e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, batch 4 per GPU on
8 GPUs (global 32), 128x128 patches, linear warmup for 15 epochs then cosine
to 0 at epoch 150. Here warmup and cosine are scheduled in steps over the
real run length (`num_steps`), so they cannot disagree with it.

The config files in configs/ start from it (configs/common.py re-exports it);
it lives in the package so that what an installed package runs (the study,
`hair_jax.experiments`) needs no file of the repository.
"""

import dataclasses

import ml_collections

from hair_jax import data
from hair_jax.nn import models


def get_base_config():
    """A ConfigDict with every field hair_jax.train reads."""
    config = ml_collections.ConfigDict()
    config.name = "base"

    config.model = ml_collections.ConfigDict()
    config.model.variant = "res_hair"  # a registered variant (hair_jax.nn.registry.variants())
    # Every models.ModelConfig field, None meaning the variant's value: any of
    # them can be set in a config file or on the command line
    # (--config.model.overrides.dim=32, --config.model.overrides.remat=none).
    config.model.overrides = model_overrides()

    config.data = data.default_config()

    t = config.train = ml_collections.ConfigDict()
    t.seed = 0
    t.global_batch_size = 32  # split over all devices and processes
    t.patch_size = 128
    # Length: configs in epochs set num_steps/warmup_steps as references to
    # num_epochs * steps_per_epoch; overriding num_steps directly also works.
    t.num_steps = 1000
    t.warmup_steps = 100
    t.learning_rate = 2e-4
    t.end_learning_rate = 0.0
    t.b1 = 0.9
    t.b2 = 0.999
    t.eps = 1e-8
    t.weight_decay = 0.01
    t.grad_clip_norm = 0.0  # 0 disables clipping
    t.ema_decay = 0.0  # 0 disables the EMA of weights
    t.model_axis_size = 1  # >1 splits large parameters over a 'model' axis
    t.shard_min_size = 2**18  # parameters smaller than this stay replicated
    t.log_every = 50
    t.image_every = 1000  # 0 disables TensorBoard image grids
    t.checkpoint_every = 1000
    t.keep_checkpoints = 3
    t.max_steps_per_run = 0  # >0: save and stop after this many steps

    # Training options that make HAIR's hypernetwork select (hair_jax.train.
    # objective): 0 / off is the paper's L1 loss. The GIV loss needs
    # config.model.overrides.giv_classes=5 (ce), the anneal a router_temperature.
    h = config.hair = ml_collections.ConfigDict()
    h.giv_loss = "ce"  # or "supcon"
    h.giv_loss_weight = 0.0
    h.giv_label_smoothing = 0.1
    h.supcon_temperature = 0.1
    h.giv_warmup_steps = 0  # the DAC learns from the GIV loss alone at first
    h.routing_loss_weight = 0.0  # - mutual information of image and box
    h.routing_target_weight = 0.0  # selectors -> box (type mod boxes)
    h.temperature_start = 1.0
    h.temperature_anneal_steps = 0  # 0: the model's router_temperature throughout

    # Evaluators run during training every `every` steps (0: never; hair_jax.
    # evaluation.evaluators), e.g. --config.evals.psnr.every=500.
    config.evals = ml_collections.ConfigDict(
        {kind: {"every": 0, "max_images": 8} for kind in ("psnr", "giv", "selection")}
    )

    config.eval = ml_collections.ConfigDict()
    config.eval.max_images_per_set = -1  # -1: every test image
    return config


def _field_type(annotation: str) -> type:
    """The type a command line gives a ModelConfig field ("tuple[int, ...] | None" -> tuple)."""
    first = annotation.split("|")[0].strip()
    if first.startswith("tuple"):
        return tuple
    if annotation == "bool | str":  # scan_blocks: True, False or "auto", parsed by ModelConfig
        return str
    return {"int": int, "float": float, "bool": bool, "str": str}[first]


def model_overrides() -> ml_collections.ConfigDict:
    """A typed placeholder (None: the variant's value) for every `models.ModelConfig` field."""
    return ml_collections.ConfigDict(
        {
            f.name: ml_collections.config_dict.placeholder(_field_type(f.type))
            for f in dataclasses.fields(models.ModelConfig)
            if f.name != "arch"  # the variant names the architecture
        }
    )


def set_epochs(train, num_epochs, warmup_epochs, steps_per_epoch):
    """Makes num_steps/warmup_steps follow the epoch fields (lazily)."""
    train.num_epochs = num_epochs
    train.warmup_epochs = warmup_epochs
    train.steps_per_epoch = steps_per_epoch
    train.num_steps = train.get_ref("num_epochs") * train.get_ref("steps_per_epoch")
    train.warmup_steps = train.get_ref("warmup_epochs") * train.get_ref("steps_per_epoch")
