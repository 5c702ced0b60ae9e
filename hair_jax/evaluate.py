"""`hair_jax.commands.evaluate` under its former name: imports and `python -m hair_jax.evaluate` keep working."""

import sys

from hair_jax.commands import evaluate as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
