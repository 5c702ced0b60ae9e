"""Res-HAIR, five degradations (IDR protocol): + GoPro deblur, LOLv1 low-light.

Command:
  python train.py --config configs/res_hair_5d.py \
      --config.data.data_dir=/path/to/data --workdir runs/res_hair_5d

Same optimiser and schedule as res_hair_3d (the authors release no 5-D
training code). One epoch is the data package's 'all_in_one_5d' mixture:
the 3-D set (111,567) + GoPro 2,103 + LOLv1 485 = 114,155 patches, i.e.
3,567 steps at batch 32 (train.py warns if the built datasets differ).

Expected: about 30.62 / 38.11 / 31.49 / 28.52 / 23.12 dB (SOTS, Rain100L,
BSD68 s25, GoPro, LOLv1; average 30.37) for the paper's model.
"""

from configs import common, res_hair_3d


def get_config():
    """The three-task recipe with the five-task data (a longer epoch)."""
    config = res_hair_3d.get_config()
    config.name = "res_hair_5d"
    config.data.name = "all_in_one_5d"
    common.set_epochs(config.train, num_epochs=150, warmup_epochs=15, steps_per_epoch=3567)
    return config
