"""The study's presets and arms, and the training config of each run.

An arm is a whole model config (the preset's architecture with the arm's
fields) plus the training loss's options (`config.hair`); a preset fixes the
budget every arm trains with and which (setting, arm, seeds) runs it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from hair_jax.nn import models
from hair_jax.nn.models import ADAPTIVE
from hair_jax.train import defaults

# The two settings: the paper's three tasks, and five (adds blur, low light).
SETTINGS = ("3d", "5d")

# Model fields of the selection options (hair_jax.nn.hyper, docs/results.md).
_HEAD = {"giv_classes": 5}  # a degradation-type head on the GIV
_ROUTER = {"router_norm": True, "router_temperature": 0.5}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One model and loss: `arch` with `model` fields over the preset's, `hair` loss options.

    `wide`: a Restormer whose dim gives Res-HAIR's parameter count
    (`matched_width`).
    """

    arch: str = "res_hair"
    model: Mapping = dataclasses.field(default_factory=dict)
    hair: Mapping = dataclasses.field(default_factory=dict)
    wide: bool = False
    about: str = ""


ARMS: dict[str, Arm] = {
    # Controls.
    "restormer": Arm("restormer", about="the static Restormer, same dims and blocks"),
    "res_hair": Arm(about="Res-HAIR as the paper trains it (L1 loss only)"),
    "res_hair_1box": Arm(
        model={"num_box": (1, 1, 1, 1, 1)},
        about="Res-HAIR with one box per level: the HAIR code path with nothing to choose",
    ),
    "restormer_wide": Arm(
        "restormer", wide=True, about="a Restormer widened to Res-HAIR's parameter count"
    ),
    # Selection options, each alone, then together.
    "ce": Arm(
        model=_HEAD,
        hair={"giv_loss_weight": 0.1},
        about="degradation-type cross-entropy on the GIV (weight 0.1, smoothing 0.1)",
    ),
    "supcon": Arm(
        hair={"giv_loss": "supcon", "giv_loss_weight": 0.1},
        about="supervised contrastive loss on the GIV (weight 0.1)",
    ),
    "router": Arm(model=_ROUTER, about="normalised router, temperature 0.5"),
    "anneal": Arm(
        model={"router_norm": True, "router_temperature": 0.25},
        hair={"temperature_start": 1.0, "temperature_anneal_steps": 1000},
        about="normalised router, temperature annealed 1 -> 0.25 over 1000 steps",
    ),
    "learned_t": Arm(
        model={"router_norm": True, "learned_temperature": True},
        about="normalised router, learned temperature from 1",
    ),
    "routing": Arm(
        model=_ROUTER,
        hair={"routing_loss_weight": 0.05},
        about="normalised router (T 0.5) + image-box mutual information loss (weight 0.05)",
    ),
    "scaled_bank": Arm(model={"bank_init": "scaled"}, about="banks scaled by sqrt(boxes)"),
    "shared_bank": Arm(model={"bank_init": "shared"}, about="banks as shared + 0.1 x own draw"),
    "ce_router": Arm(
        model={**_HEAD, **_ROUTER},
        hair={"giv_loss_weight": 0.1},
        about="ce + router",
    ),
    "ce_router_routing": Arm(
        model={**_HEAD, **_ROUTER},
        hair={"giv_loss_weight": 0.1, "routing_loss_weight": 0.05},
        about="ce + router + routing loss",
    ),
    "typed": Arm(
        model={**_HEAD, "type_routing": 3.0},
        hair={"giv_loss_weight": 0.1},
        about="ce + routing by the GIV head's type posterior (gain 3, type t -> box t mod K)",
    ),
    "typed_router": Arm(
        model={**_HEAD, **_ROUTER, "type_routing": 1.5},
        hair={"giv_loss_weight": 0.1},
        about="ce + router + type routing (gain 1.5 at temperature 0.5)",
    ),
    "adaptive": Arm(
        model=ADAPTIVE,
        hair={"giv_loss_weight": 0.1},
        about="the res_hair_adaptive variant: typed_skip with type-routing gain 5",
    ),
    "typed_skip": Arm(
        model={**_HEAD, "type_routing": 3.0, "giv_skip": True},
        hair={"giv_loss_weight": 0.1},
        about="typed, with the GIV skip (the latent's mean added to the GIV)",
    ),
    "ce_skip": Arm(
        model={**_HEAD, "giv_skip": True},
        hair={"giv_loss_weight": 0.1},
        about="ce with the GIV skip, HSNs as the paper's",
    ),
    "ce_router_target": Arm(
        model={**_HEAD, **_ROUTER},
        hair={"giv_loss_weight": 0.1, "routing_target_weight": 0.05},
        about="ce + router + routing target type -> box (weight 0.05)",
    ),
}
HAIR_ARMS = tuple(name for name, arm in ARMS.items() if arm.arch == "res_hair")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One study: model size, training budget, evaluation and runs.

    Attributes:
      name: the preset's name (also the records' folder).
      dim, num_blocks, num_refinement_blocks, heads, dac_groups: the Res-HAIR
        and Restormer architecture (`models.ModelConfig` fields).
      patch_size, batch_size, num_steps, warmup_steps, learning_rate: the
        training budget, the same for every run.
      eval_every: checkpoint and evaluate every this many steps.
      curve_images: test images per set at the evaluations during training
        (None: all).
      max_images: test images per set at the final evaluation, the GIV swap,
        the uniform-selector ablation and the GIV probes (None: all).
      runs: (setting, arm, seeds) triples, run in this order (list what
        matters most first: an interrupted sweep has those).
    """

    name: str
    dim: int
    num_blocks: tuple[int, ...]
    num_refinement_blocks: int
    heads: tuple[int, ...]
    dac_groups: int
    patch_size: int
    batch_size: int
    num_steps: int
    warmup_steps: int
    learning_rate: float
    eval_every: int
    curve_images: int | None
    max_images: int | None
    runs: tuple[tuple[str, str, tuple[int, ...]], ...]

    def run_list(self, only=None) -> list[tuple[str, str, int]]:
        """Every (setting, arm, seed) in the order of `runs`, each entry's seeds in turn.

        Args:
          only: if given, keep just these (setting, arm, seed) runs; each
            must be a run of the preset (else ValueError).
        """
        runs = [(st, arm, s) for st, arm, ss in self.runs for s in ss]
        if only is None:
            return runs
        unknown = sorted(set(only) - set(runs))
        if unknown:
            raise ValueError(
                f"{'/'.join(map(str, unknown[0]))} is not a run of preset {self.name!r}"
            )
        return [r for r in runs if r in set(only)]

    def eval_steps(self) -> list[int]:
        """The steps evaluated during training, 0 (initialisation) included."""
        return sorted({*range(0, self.num_steps, self.eval_every), self.num_steps})


# The selecting candidate and its controls on seed 0, the one-box control,
# seeds 1-4 of those four (the comparisons the study is for), then the other
# options, each on one seed: every option alone first (one per lever: GIV
# supervision, router scale, routing loss, bank init), then the pairs.
# (typed_skip led the first sweep; the adaptive arm, its sharper form,
# replaced it after one run.)
_MAIN = ("adaptive", "res_hair", "restormer", "restormer_wide")
_SCREEN = (
    "typed_skip",
    "ce",
    "router",
    "routing",
    "scaled_bank",
    "shared_bank",
    "supcon",
    "anneal",
    "learned_t",
    "ce_router",
    "ce_skip",
    "typed",
    "typed_router",
    "ce_router_routing",
    "ce_router_target",
)
_CPU = Preset(
    name="cpu",
    dim=16,
    num_blocks=(1, 1, 1, 1),
    num_refinement_blocks=1,
    heads=(1, 2, 4, 8),
    dac_groups=24,
    # 64 px: the tiny DAC (24 channels in 24 groups) sees a 2x2 map at the end;
    # at 48 px it saw 1x1 and gave every training patch the same GIV.
    patch_size=64,
    batch_size=4,
    num_steps=2000,
    warmup_steps=100,
    learning_rate=1e-3,
    eval_every=250,
    curve_images=8,
    max_images=None,
    runs=(
        *(("3d", arm, (0,)) for arm in (*_MAIN, "res_hair_1box")),
        *(("3d", arm, (seed,)) for seed in (1, 2, 3, 4) for arm in _MAIN),
        *(("3d", arm, (0,)) for arm in _SCREEN),
    ),
)
PRESETS = {
    # On a 2-core CPU: about 10 minutes a run (docs/results.md).
    "cpu": _CPU,
    # The same study at the paper's width and depth, for a GPU.
    "gpu": Preset(
        name="gpu",
        dim=48,
        num_blocks=(4, 6, 6, 8),
        num_refinement_blocks=4,
        heads=(1, 2, 4, 8),
        dac_groups=24,
        patch_size=128,
        batch_size=8,
        num_steps=10000,
        warmup_steps=500,
        learning_rate=2e-4,
        eval_every=1000,
        curve_images=None,
        max_images=None,
        runs=(
            *(("3d", arm, (seed,)) for seed in (0, 1, 2) for arm in _MAIN),
            *(("3d", arm, (0,)) for arm in ("res_hair_1box", "typed_skip")),
            *(("5d", arm, (seed,)) for seed in (0, 1, 2) for arm in _MAIN[:3]),
        ),
    ),
}


def base_model(preset: Preset, arch: str = "res_hair") -> models.ModelConfig:
    """The preset's `models.ModelConfig` for `arch`."""
    return models.ModelConfig(
        arch=arch,
        dim=preset.dim,
        num_blocks=preset.num_blocks,
        num_refinement_blocks=preset.num_refinement_blocks,
        heads=preset.heads,
        dac_groups=preset.dac_groups,
        remat="none",  # small models: memory is no concern, recomputing is
    )


def param_count(model_cfg) -> int:
    """Parameters of a model config (nothing is allocated)."""
    return models.count_params(models.abstract_model(model_cfg))


def matched_width(preset: Preset) -> tuple[int, int, int]:
    """(dim, its Restormer's params, Res-HAIR's params): the widened Restormer.

    Searches even dims from the preset's upward whose channels at every
    level divide by that level's heads, and takes the one whose Restormer's
    parameter count is closest to Res-HAIR's.
    """
    target = param_count(base_model(preset))
    restormer = base_model(preset, "restormer")
    best = None
    dim = preset.dim + preset.dim % 2
    while True:
        if all(dim * 2**level % h == 0 for level, h in enumerate(preset.heads)):
            n = param_count(dataclasses.replace(restormer, dim=dim))
            if best is None or abs(n - target) < abs(best[1] - target):
                best = (dim, n)
            if n >= target:
                return best[0], best[1], target
        dim += 2


def arm_model(preset: Preset, arm: str, wide_dim: int | None = None) -> models.ModelConfig:
    """The `models.ModelConfig` of an arm; `wide_dim` from `matched_width`."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; one of {tuple(ARMS)}")
    spec = ARMS[arm]
    cfg = dataclasses.replace(base_model(preset, spec.arch), **spec.model)
    if spec.wide:
        cfg = dataclasses.replace(cfg, dim=wide_dim or matched_width(preset)[0])
    return cfg


def run_config(preset: Preset, setting: str, arm: str, seed: int, data_dir: str, wide_dim=None):
    """The training config of one run (`train.defaults`, the preset and the whole arm)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; one of {SETTINGS}")
    model_cfg = arm_model(preset, arm, wide_dim)
    config = defaults.get_base_config()
    config.name = f"ablation-{preset.name}"
    config.model.variant = model_cfg.arch
    # Every field: training rebuilds exactly this config.
    for field, value in dataclasses.asdict(model_cfg).items():
        config.model.overrides[field] = value
    for field, value in ARMS[arm].hair.items():
        config.hair[field] = value
    config.data.name = "synthetic_large"
    config.data.data_dir = data_dir
    config.data.synthetic_five_task = setting == "5d"
    t = config.train
    t.seed = seed
    t.global_batch_size = preset.batch_size
    t.patch_size = preset.patch_size
    t.num_steps = preset.num_steps
    t.warmup_steps = preset.warmup_steps
    t.learning_rate = preset.learning_rate
    t.log_every = preset.eval_every
    t.image_every = 0
    t.checkpoint_every = preset.eval_every
    # Every checkpoint stays until evaluated; the sweep prunes them after.
    t.keep_checkpoints = len(preset.eval_steps()) + 1
    return config
