"""NAFNet baseline on the five-degradation set (IDR protocol).

Command:
  python train.py --config configs/nafnet_5d.py \
      --config.data.data_dir=/path/to/data --workdir runs/nafnet_5d

configs/nafnet_3d.py's model with res_hair_5d's data and schedule. No
result of this config has been measured yet.
"""

from configs import res_hair_5d


def get_config():
    config = res_hair_5d.get_config()
    config.name = "nafnet_5d"
    config.model.variant = "nafnet_gopro_32"
    return config
