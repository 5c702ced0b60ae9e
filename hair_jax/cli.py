"""`hair_jax.commands.common` under its former name (one-line errors, quiet logs)."""

import sys

from hair_jax.commands import common as _module

sys.modules[__name__] = _module
