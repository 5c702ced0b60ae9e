"""hair_jax.train.logs: the compile notice, then a bar whose rate excludes compilation."""

import logging
import os
import time

import ml_collections

from hair_jax.train.logs import Logger


def test_first_step_is_announced_as_compiling_and_the_bar_starts_after_it(tmp_path, capsys):
    config = ml_collections.ConfigDict({"name": "t"})
    logger = Logger(str(tmp_path), config, start_step=10, num_steps=20)
    logger.compiling()
    assert capsys.readouterr().out.startswith("Compiling the train step")
    assert logger.bar is None  # nothing that would count compilation as a step
    time.sleep(0.2)  # "compiling"
    logger.step(11, {"loss": 0.5, "psnr": 20.0, "lr": 1e-3}, log=True)
    out = capsys.readouterr()
    assert "Compiled in 0 s; training." in out.out
    assert logger.bar.n == 11 and logger.bar.initial == 11  # the rate counts from here
    for step in (12, 13):
        logger.step(step, {"loss": 0.5, "psnr": 20.0, "lr": 1e-3}, log=step == 13)
    assert logger.bar.n == 13
    assert logger.bar.format_dict["elapsed"] < 0.2  # the compile's 0.2 s are not in it
    logger.close()


def test_quiet_logs_drops_library_warnings_on_any_handler():
    """An argparse command (no absl.app): tfds's warning is dropped on absl's logger itself."""
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

    from hair_jax.commands import common  # pylint: disable=g-import-not-at-top

    common.quiet_logs()
    common.quiet_logs()  # idempotent
    logger = absl_logging.get_absl_logger()
    assert sum(isinstance(f, common.QuietLibraries) for f in logger.filters) == 1

    def passes(path, level):
        record = logging.LogRecord("absl", level, path, 1, "message", None, None)
        return logger.filter(record)

    tfds = os.path.join("site-packages", "tensorflow_datasets", "core", "features", "image.py")
    assert not passes(tfds, logging.WARNING)  # "OpenCV is not installed"
    assert passes(tfds, logging.ERROR)
    assert passes(os.path.join(os.path.dirname(common.__file__), "restore.py"), logging.INFO)
