"""Shared test setup: CPU only; XLA tuned for compile time, not run time.

Test shapes are tiny, so XLA's compile time dominates the suite. Backend
optimisation level 0 compiles about 2-3x faster and leaves results the same
up to float rounding. Subprocesses started by tests inherit these settings.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
