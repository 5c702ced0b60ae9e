"""`hair_jax.commands.restore` under its former name: imports and `python -m hair_jax.restore` keep working."""

import sys

from hair_jax.commands import restore as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
