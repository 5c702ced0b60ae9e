"""Evaluates a checkpoint after the paper's protocol and prints its table.

  python eval.py --checkpoint runs/demo                # a training workdir (latest step)
  python eval.py --checkpoint runs/demo --step 200 --raw_weights
  python eval.py --checkpoint exports/hair3d           # a model export
  python eval.py --checkpoint hair3d.ckpt --data_dir /data/tfds   # the authors' weights

--checkpoint is a training workdir (EMA weights when the run kept them), a
model export (`hair_jax.save_model`, `python -m hair_jax.convert`) or the
authors' PyTorch Lightning .ckpt; the kind is detected. Without --data_dir the
embedded synthetic test sets are used (right after `python train.py`); with
it, the TFDS sets of the three-task (BSD68 sigma 15/25/50, Rain100L, SOTS,
Urban100 when built) or five-task (--setting 5d) table. Results go to
--output (default <workdir>/eval/<step>/<data>, or <export>-eval/<data>):
results.json, results.csv and, with --save_images, the restored images.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Training workdir, model export or PyTorch .ckpt.", required=True
)
_STEP = flags.DEFINE_integer("step", None, "Workdirs: evaluate this step (default: latest).")
_RAW = flags.DEFINE_bool("raw_weights", False, "Workdirs: the raw weights, not the EMA.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS directory of the real test sets (default: the synthetic sets)."
)
_SETTING = flags.DEFINE_enum(
    "setting", None, ["3d", "5d"], "Three- or five-task test sets (default: the run's, else 3d)."
)
_TEST_SETS = flags.DEFINE_list("test_sets", None, "Only these sets, e.g. bsd68_25,rain100l.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", None, "At most this many images per set.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for results.json/.csv and images.")
_SAVE_IMAGES = flags.DEFINE_bool("save_images", False, "Also write the restored images (PNG).")
_Y_CHANNEL = flags.DEFINE_bool("y_channel", False, "Also print the BT.601 Y-channel table.")


class _QuietLibraries(std_logging.Filter):
    """Drops dataset/checkpoint libraries' INFO and WARNING lines (e.g. "no OpenCV")."""

    def filter(self, record):
        path = record.pathname
        noisy = f"{os.sep}tensorflow_datasets{os.sep}" in path or f"{os.sep}orbax{os.sep}" in path
        return record.levelno >= std_logging.ERROR or not noisy


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}", exitcode=2)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from hair_jax import evaluate  # pylint: disable=g-import-not-at-top
    from hair_jax.checkpoint import ExportError  # pylint: disable=g-import-not-at-top
    from hair_jax.torch_pickle import CheckpointError  # pylint: disable=g-import-not-at-top

    try:
        report = evaluate.evaluate_checkpoint(
            _CHECKPOINT.value,
            step=_STEP.value,
            raw_weights=_RAW.value,
            data_dir=_DATA_DIR.value,
            setting=_SETTING.value,
            test_sets=_TEST_SETS.value,
            max_images=_MAX_IMAGES.value,
            output=_OUTPUT.value,
            save_images=_SAVE_IMAGES.value,
        )
    except (ExportError, CheckpointError, ValueError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        return 2
    print()
    print(evaluate.paper_table(report.rows))
    if _Y_CHANNEL.value:
        print()
        print(evaluate.paper_table(report.rows, y_channel=True))
    print(
        f"\n{report.compiles} compile(s) of the jitted forward pass; "
        f"{report.seconds:.1f} s.\nWrote {' and '.join(report.files)}"
    )
    if _SAVE_IMAGES.value:
        print(f"Restored images in {os.path.join(report.output, 'images')}")
    return 0


if __name__ == "__main__":
    app.run(main)
