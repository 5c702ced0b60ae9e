"""NAF-HAIR (HAIR on NAFNet's middle and decoder levels), three degradations.

Command:
  python train.py --config configs/naf_hair_3d.py \
      --config.data.data_dir=/path/to/data --workdir runs/naf_hair_3d

`naf_hair_gopro_32`: configs/nafnet_3d.py's U-Net with its middle block and
four decoder blocks made dynamic (banks of 3 boxes, `models.naf_num_box`),
the same data, optimiser and schedule as res_hair_3d. No result of this
config has been measured yet.
"""

from configs import res_hair_3d


def get_config():
    config = res_hair_3d.get_config()
    config.name = "naf_hair_3d"
    config.model.variant = "naf_hair_gopro_32"
    return config
