"""Studies built on the library: each module is a command (`python -m ...`)."""
