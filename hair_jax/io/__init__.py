"""Files in and out: the torch reader and importer, safetensors weights, model exports, images.

Depends only on `hair_jax.nn`; data, training and evaluation build on it.
"""
