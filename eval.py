"""Evaluates a checkpoint after the paper's protocol and prints its table.

  python eval.py --checkpoint runs/demo                # a training workdir (latest step)
  python eval.py --checkpoint runs/demo --step 200 --raw_weights
  python eval.py --checkpoint exports/hair3d           # a model export
  python eval.py --checkpoint hair3d.ckpt --data_dir /data/tfds   # the authors' weights
  python eval.py --checkpoint res_hair.jaxexport       # a standalone artifact

--checkpoint is a training workdir (EMA weights when the run kept them), a
model export (`hair_jax.save_model`, `python -m hair_jax.convert`), the
authors' PyTorch Lightning .ckpt or a standalone artifact (`python -m
hair_jax.export`: .jaxexport or .onnx, both at any image size); the kind
is detected. Without --data_dir the embedded synthetic test sets are used
(right after `python train.py`); with it, the TFDS sets of the three-task
(BSD68 sigma 15/25/50, Rain100L, SOTS, Urban100 when built) or five-task
(--setting 5d) table. Results go to
--output (default <workdir>/eval/<step>/<data>, or <export>-eval/<data>):
results.json, results.csv and, with --save_images, the restored images.
--giv_plot giv.png also draws the GIVs of many degraded images in 2-D
(`hair_jax.evaluation.giv`) and prints their nearest-centroid accuracy;
--selection measures whether the hypernetwork selects on the test images
(`hair_jax.evaluation.selection`).

A mistake (a flag, a path, a step the workdir does not have, a damaged
checkpoint) ends with one line on stderr and exit code 2, before anything is
written.
"""

import os

from absl import app, flags

from hair_jax.commands import common

PROG = "eval.py"
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "Training workdir, model export, PyTorch .ckpt or standalone artifact (required).",
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
_GIV_PLOT = flags.DEFINE_string(
    "giv_plot",
    None,
    "Also draw the GIVs of many degraded images in 2-D (PCA, t-SNE) into this PNG and print "
    "how well they tell the degradations apart (Res-HAIR only).",
)
_SELECTION = flags.DEFINE_bool(
    "selection",
    False,
    "Also measure whether the model selects on the test images: selector entropy, "
    "mutual information with the degradation type, PSNR drop with uniform selectors "
    "and with swapped GIVs (HAIR models only).",
)


def fail(message):
    """Ends the program with one line on stderr and exit code 2."""
    common.fail(PROG, message)


def _parse_flags(argv):
    """absl's flag parsing; a mistake ends with one line (`fail`)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{e} (see --helpshort)")


def check_flags():
    """The mistakes found without loading anything; each ends with `fail`."""
    if _CHECKPOINT.value is None:
        fail("--checkpoint is required: a training workdir, a model export or a PyTorch .ckpt")
    if not os.path.exists(_CHECKPOINT.value):
        fail(f"--checkpoint: {_CHECKPOINT.value}: no such file or directory")
    if _MAX_IMAGES.value is not None and _MAX_IMAGES.value < 1:
        fail(f"--max_images must be at least 1, got {_MAX_IMAGES.value}; leave it out for all")
    data_dir = _DATA_DIR.value
    if data_dir is not None and not os.path.isdir(os.path.expanduser(data_dir)):
        fail(
            f"--data_dir: {data_dir}: no such directory; build the test sets with "
            "`python -m hair_jax.data.prepare` (docs/data.md), or leave it out for the synthetic sets"
        )
    # Imported once the flags parse: jax and the model code take seconds.
    from hair_jax.evaluation import protocol  # pylint: disable=g-import-not-at-top

    if _OUTPUT.value is not None:
        try:
            common.check_output(_OUTPUT.value)
        except ValueError as e:
            fail(e)
    plot = _GIV_PLOT.value
    if plot is not None:
        if not plot.lower().endswith(".png") or os.path.isdir(plot):
            fail(f"--giv_plot must name a .png file, got {plot!r}")
        try:
            common.check_output(os.path.dirname(plot) or ".", flag="--giv_plot")
        except ValueError as e:
            fail(e)
    try:
        protocol.eval_data_config(
            data_dir=data_dir, setting=_SETTING.value or "3d", names=_TEST_SETS.value
        )
    except ValueError as e:
        fail(f"--test_sets: {e}")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; give the checkpoint as --checkpoint=PATH")
    common.quiet_logs()
    check_flags()
    from hair_jax.commands import evaluate  # pylint: disable=g-import-not-at-top
    from hair_jax.evaluation.report import paper_table  # pylint: disable=g-import-not-at-top

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
            giv_plot=_GIV_PLOT.value,
            selection_measures=_SELECTION.value,
        )
    except ValueError as e:  # also ExportError and CheckpointError: a damaged checkpoint
        fail(e)
    print()
    print(paper_table(report.rows))
    if _Y_CHANNEL.value:
        print()
        print(paper_table(report.rows, y_channel=True))
    print(
        f"\n{report.compiles} compile(s) of the jitted forward pass; "
        f"{report.seconds:.1f} s.\nWrote {' and '.join(report.files)}"
    )
    if _SAVE_IMAGES.value:
        print(f"Restored images in {os.path.join(report.output, 'images')}")
    if report.giv_summary:
        print(report.giv_summary)
    if _GIV_PLOT.value:
        print(f"GIV plot: {_GIV_PLOT.value}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
