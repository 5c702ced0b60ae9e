"""Demo size: a tiny NAF-HAIR on the embedded synthetic data, CPU-friendly.

Command:
  python train.py --config configs/naf_hair_demo.py

configs/demo.py's data and schedule with `naf_hair_tiny` (width 16, one
block per level, HAIR on the middle and the four decoder levels) instead of
the tiny Res-HAIR. `--config.model.variant=nafnet_tiny` trains the static
NAFNet of the same size for comparison. Its 64 px patches are the smallest
NAF-HAIR takes: its DAC reads the H/8 skip, an 8 px map there, which
its last GroupNorm sees as 2x2. No result of
this config has been measured yet.
"""

from configs import demo


def get_config():
    config = demo.get_config()
    config.name = "naf_hair_demo"
    config.model.variant = "naf_hair_tiny"
    return config
