"""Restormer baseline (no hypernetwork) on the three-degradation set.

Command:
  python train.py --config configs/restormer_3d.py \
      --config.data.data_dir=/path/to/data --workdir runs/restormer_3d

Same data, optimiser and schedule as res_hair_3d, so the two runs differ
only in the model. Expected: about 29.92 / 35.56 / 33.86 / 31.20 / 27.90 dB
(SOTS, Rain100L, BSD68 s15/s25/s50), as the HAIR paper reports for Restormer.
"""

from configs import res_hair_3d


def get_config():
    config = res_hair_3d.get_config()
    config.name = "restormer_3d"
    config.model.variant = "restormer"
    return config
