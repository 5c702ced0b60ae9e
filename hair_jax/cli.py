"""What train.py and eval.py share: one-line errors and quiet library logs.

Nothing here imports jax, so a command line can be checked in a blink.
"""

import logging
import os
import sys

from absl import logging as absl_logging

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Their warnings are about speed-ups and internals a user cannot act on
# (e.g. tfds's "OpenCV is not installed").
_QUIET_LIBRARIES = ("tensorflow_datasets", "orbax")


def error(prog, message) -> int:
    """Prints `<prog>: error: <message>` as one line on stderr; returns the exit code, 2.

    Every command reports a mistake this way (argparse's own errors look the same).
    """
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    print(f"{prog}: error: {'; '.join(lines)}", file=sys.stderr, flush=True)
    return 2


def fail(prog, message):
    """`error`, then exit."""
    sys.exit(error(prog, message))


class QuietLibraries(logging.Filter):
    """Keeps hair_jax's lines and the libraries' errors and warnings (but tfds's and orbax's).

    Drops the libraries' INFO lines: jax's backend probe ("Unable to
    initialize backend 'tpu'"), tfds's "Load dataset info", orbax's dozens per
    checkpoint.
    """

    def filter(self, record):
        if record.levelno >= logging.ERROR or os.path.abspath(record.pathname).startswith(_PACKAGE):
            return True
        if record.levelno < logging.WARNING:
            return False
        return not any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in _QUIET_LIBRARIES)


def quiet_logs():
    """Adds `QuietLibraries` to absl's log handler (the one `absl.app.run` uses).

    Some jax versions (0.8) also print jax's INFO lines through a handler of
    their own, so the "jax" logger is set to WARNING as well, unless the user
    chose its level (JAX_LOGGING_LEVEL).
    """
    absl_logging.get_absl_handler().addFilter(QuietLibraries())
    jax_logger = logging.getLogger("jax")
    if jax_logger.level == logging.NOTSET:
        jax_logger.setLevel(logging.WARNING)
