"""hair-jax: HAIR / Res-HAIR all-in-one image restoration in JAX + Flax NNX."""
