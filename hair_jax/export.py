"""`hair_jax.commands.export` under its former name: imports and `python -m hair_jax.export` keep working."""

import sys

from hair_jax.commands import export as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
