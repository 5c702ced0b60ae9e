"""Res-HAIR, three degradations (denoise s15/25/50, derain, dehaze): the paper.

Command (8 GPUs, or a TPU host; one process per host on clusters):
  python train.py --config configs/res_hair_3d.py \
      --config.data.data_dir=/path/to/data --workdir runs/res_hair_3d

Recipe (reference code defaults): global batch 32, 128x128 patches, L1,
AdamW lr 2e-4 betas (0.9, 0.999) wd 0.01, 15 warmup epochs then cosine to 0
at epoch 150. One epoch is the reference's mixed set: (400 BSD400 + 4,744
WED) x 3 sigmas + 200 Rain100L x 120 + 72,135 RESIDE OTS = 111,567 patches,
i.e. 3,486 steps at batch 32 (drop_last), 522,900 steps in all.

Expected: about 30.98 / 38.59 / 34.16 / 31.51 / 28.24 dB (SOTS, Rain100L,
BSD68 s15/s25/s50; average 32.70) for the published checkpoint.
"""

from configs import common


def get_config():
    config = common.get_base_config()
    config.name = "res_hair_3d"
    config.model.variant = "res_hair"
    config.data.name = "all_in_one_3d"
    t = config.train
    t.global_batch_size = 32
    t.patch_size = 128
    common.set_epochs(t, num_epochs=150, warmup_epochs=15, steps_per_epoch=3486)
    t.log_every = 100
    t.image_every = 5000
    t.checkpoint_every = 5000
    return config
