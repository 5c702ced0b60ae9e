"""NAFNet baseline (no hypernetwork) on the three-degradation set.

Command:
  python train.py --config configs/nafnet_3d.py \
      --config.data.data_dir=/path/to/data --workdir runs/nafnet_3d

The official NAFNet-GoPro-width32 U-Net (`nafnet_gopro_32`, 17,111,907
parameters; the NAFNet of HAIR's five-task table has this size), trained
with res_hair_3d's data, optimiser and schedule, so that this run, Res-HAIR
and NAF-HAIR differ only in the model. (NAFNet's own recipe, a PSNR loss
and AdamW lr 1e-3 betas (0.9, 0.9), is not what this config runs.)
No result of this config has been measured yet.
"""

from configs import res_hair_3d


def get_config():
    config = res_hair_3d.get_config()
    config.name = "nafnet_3d"
    config.model.variant = "nafnet_gopro_32"
    return config
