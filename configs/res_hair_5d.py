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

from configs import common


def get_config():
    config = common.get_base_config()
    config.name = "res_hair_5d"
    config.model.variant = "res_hair"
    config.data.name = "all_in_one_5d"
    t = config.train
    t.global_batch_size = 32
    t.patch_size = 128
    common.set_epochs(t, num_epochs=150, warmup_epochs=15, steps_per_epoch=3567)
    t.log_every = 100
    t.image_every = 5000
    t.checkpoint_every = 5000
    return config
