"""Files in and out: the torch reader and importer, model exports, image files.

Depends only on `hair_jax.nn`; data, training and evaluation build on it.
"""
