"""Demo: a tiny Res-HAIR on the embedded synthetic data, CPU-friendly.

Command (the default of train.py):
  python train.py                      # == --config configs/demo.py

Expected: on a 2-core CPU it finishes in about 4 minutes (about 0.6 s per
step plus half a minute of compilation) and prints an evaluation table on
the synthetic test sets in which the restored PSNR beats the degraded
input's PSNR for every task. Measured on 2026-12-03 in a fresh clone with
the README's command on a 2-core AMD EPYC machine (4 min 19 s in all,
pip install included): denoise 15/25/50 +0.78/+1.55/+1.76 dB, derain
+1.11, dehaze +2.08 (the code of 2026-11-27 gives the same table on that
machine; the numbers differ between processor kinds). Checkpoints,
TensorBoard events (scalars and degraded|restored|clean grids) and
config.json land in runs/demo-<timestamp>/ (or --workdir).

`python eval.py --checkpoint runs/demo-<timestamp> --giv_plot giv.png`
then draws the GIVs. On the same run it measured the nearest-centroid
accuracy of the degradation type from the GIV at 44.0% (chance 33.3%), and
of the task at 26.7% (chance 20%): 250 steps do not teach the DAC to
separate the degradations (see docs/evaluation.md, "Colab notebook and the GIV picture").
"""

from configs import common


def get_config():
    config = common.get_base_config()
    config.name = "demo"
    config.model.variant = "tiny"  # Res-HAIR, dim 16, blocks [1,2,2,1]
    config.data.name = "synthetic"
    t = config.train
    t.global_batch_size = 4
    # 64 px: the DAC then ends on a 2x2 map. At 32 px it ends on 1x1, where the
    # tiny DAC (one channel per GroupNorm group) gives every image the same GIV.
    t.patch_size = 64
    t.num_steps = 250
    t.warmup_steps = 20
    t.learning_rate = 1e-3  # a short run needs a larger step than 2e-4
    t.log_every = 10
    t.image_every = 100
    t.checkpoint_every = 200
    t.keep_checkpoints = 2
    return config
