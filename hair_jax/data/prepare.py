"""`hair_jax.commands.prepare` under its former name: imports and `python -m hair_jax.data.prepare` keep working."""

import sys

from hair_jax.commands import prepare as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
