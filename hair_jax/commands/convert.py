"""`python -m hair_jax.convert CKPT OUT`: the authors' PyTorch weights -> a model export.

    python -m hair_jax.convert hair3d.ckpt exports/hair3d

Reads the checkpoint without torch (`hair_jax.io.torch_import`; a
`.safetensors` file through `hair_jax.io.safetensors_file`) and writes
`OUT/config.json` and `OUT/params/` (`hair_jax.io.model_export`), which
`eval.py`, `hair-restore` and `hair_jax.load_checkpoint` read. A file that
cannot be converted ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from hair_jax.commands import common
from hair_jax.io.model_export import ExportError, save_model
from hair_jax.io.safetensors_file import is_safetensors, load_safetensors
from hair_jax.io.torch_import import CheckpointError, load_torch_checkpoint
from hair_jax.nn.models import count_params

PROG = "python -m hair_jax.convert"


def main(argv=None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "checkpoint",
        help="PyTorch .ckpt/.pth file (Lightning, NAFNet params or bare state_dict) "
        "or .safetensors file",
    )
    parser.add_argument("out_dir", help="new directory for the model export (config.json, params/)")
    args = parser.parse_args(argv)
    try:
        read = load_safetensors if is_safetensors(args.checkpoint) else load_torch_checkpoint
        model = read(args.checkpoint)
        save_model(model, args.out_dir)
    except (CheckpointError, ExportError) as e:
        return common.error(PROG, e)
    print(f"wrote {args.out_dir} ({model.config.arch}, {count_params(model):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
