"""Demo of a Res-HAIR that selects: `tiny_adaptive` on the embedded synthetic data.

Command:
  python train.py --config configs/res_hair_adaptive_demo.py

configs/demo.py's model and data with the options of the study's
`adaptive` arm (docs/results.md): a degradation-type head on the GIV
trained by a cross-entropy (weight 0.1, label smoothing 0.1), every HSN
biased towards box (type mod K) by the head's posterior (gain 5), and the
latent's mean added to the GIV. It trains 1500 steps instead of 250, so
that the head learns the types and the boxes specialise.

Then `python eval.py --checkpoint runs/res_hair_adaptive_demo-<timestamp>
--selection --giv_plot giv.png` says whether it selects on the held-out test
images (entropy, type mutual information, PSNR drop with uniform selectors
and with swapped GIVs).
"""

from configs import demo


def get_config():
    config = demo.get_config()
    config.name = "res_hair_adaptive_demo"
    config.model.variant = "tiny_adaptive"  # tiny + models.ADAPTIVE's selection options
    config.hair.giv_loss_weight = 0.1
    t = config.train
    t.num_steps = 1500
    t.warmup_steps = 50
    t.log_every = 50
    t.image_every = 500
    t.checkpoint_every = 500
    return config
