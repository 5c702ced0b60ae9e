"""What every command shares: the checkpoint arguments, one-line errors, quiet library logs.

Nothing here imports jax at import time, so a command line can be checked in
a blink.
"""

import logging
import os
import sys

from absl import logging as absl_logging

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # hair_jax/
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


CHECKPOINT_HELP = (
    "a training workdir (EMA weights when the run kept them), a model export, a PyTorch "
    ".ckpt/.pth, a .safetensors file or a standalone artifact (.jaxexport, .onnx)"
)


def add_checkpoint_arguments(parser, *, positional: bool = False) -> None:
    """The checkpoint, `--step` and `--raw_weights` arguments of every command that loads one."""
    if positional:
        parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    else:
        parser.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    parser.add_argument("--step", type=int, help="workdirs: this step instead of the latest")
    parser.add_argument("--raw_weights", action="store_true", help="workdirs: not the EMA weights")


def load_checkpoint(prog, args):
    """The `loading.LoadedModel` that `args` (`add_checkpoint_arguments`) name.

    Returns None after a one-line error (`error`) if it cannot be loaded.
    """
    # Imported only now: loading pulls in jax and the training code (seconds).
    from hair_jax import loading  # pylint: disable=g-import-not-at-top

    try:
        return loading.load_model(args.checkpoint, step=args.step, raw_weights=args.raw_weights)
    except ValueError as e:  # ExportError, CheckpointError, ArtifactError: the file is named
        error(prog, e)
        return None


def check_output(path: str, flag: str = "--output") -> None:
    """Raises ValueError unless directory `path` exists or can be made.

    Called before any work, so a bad output is reported first; the message
    tells to choose another `flag`.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot write to {path}: {existing} is a file; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write to {path}: {existing} is not writable; choose another {flag}"
        )


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


class PlainLines(logging.Formatter):
    """A log line as a person reads it: the message, "warning: " or "error: " before those."""

    def format(self, record):
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def quiet_logs():
    """Adds `QuietLibraries` to absl's log handler (the one `absl.app.run` uses), plain lines.

    absl's prefixes (level, time, thread, file:line) come back with
    `--verbosity=1` (absl's own flag). Some jax versions (0.8) also print
    jax's INFO lines through a handler of their own, so the "jax" logger is
    set to WARNING as well, unless the user chose its level (JAX_LOGGING_LEVEL).
    """
    handler = absl_logging.get_absl_handler()
    handler.addFilter(QuietLibraries())
    # Also on absl's logger: without absl.app (the argparse commands) its
    # records reach whatever handler the root logger has.
    absl_logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, QuietLibraries) for f in absl_logger.filters):
        absl_logger.addFilter(QuietLibraries())
    if absl_logging.get_verbosity() < absl_logging.DEBUG:
        handler.setFormatter(PlainLines())
    jax_logger = logging.getLogger("jax")
    if jax_logger.level == logging.NOTSET:
        jax_logger.setLevel(logging.WARNING)
