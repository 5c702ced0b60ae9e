"""Damaged model exports end in one ExportError line naming the file.

orbax raises arbitrary exceptions for damaged files; `load_checkpoint` and
`load_model` turn each into one line. config.json is read only up to
`model_export.MAX_CONFIG_BYTES` and must be an object of the right types.
"""

from __future__ import annotations

import json
import os

import pytest

from hair_jax import loading
from hair_jax.io import model_export
from hair_jax.nn import models


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    cfg = models.ModelConfig(
        dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1), dac_groups=4
    )
    path = tmp_path_factory.mktemp("exp") / "export"
    model_export.save_model(models.build_model(cfg), path)
    return path


def _copy(export, tmp_path):
    import shutil

    dst = tmp_path / "export"
    shutil.copytree(export, dst)
    return dst


def _files(root, name):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f == name]


def _biggest_data_file(root):
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    return max(files, key=os.path.getsize)


def _truncate_array_file(path):
    big = _biggest_data_file(path / "params")
    with open(big, "r+b") as f:
        f.truncate(os.path.getsize(big) // 2)


def _garbage_metadata(path):
    for f in _files(path / "params", "_METADATA"):
        with open(f, "wb") as fh:
            fh.write(b"\x00\xffnot json{")


def _config_not_json(path):
    (path / "config.json").write_bytes(b"\xff\xfe{{{ not json")


def _config_a_list(path):
    (path / "config.json").write_text("[1, 2, 3]")


def _config_wrong_types(path):
    cfg = json.loads((path / "config.json").read_text())
    cfg["dim"] = "eight"
    (path / "config.json").write_text(json.dumps(cfg))


def _config_other_model(path):
    cfg = json.loads((path / "config.json").read_text())
    cfg["dim"] = 4096  # a far bigger model than params/ holds
    (path / "config.json").write_text(json.dumps(cfg))


def _config_huge(path):
    with open(path / "config.json", "w") as f:
        f.write('{"dim": 8, "pad": "' + "x" * (model_export.MAX_CONFIG_BYTES + 1) + '"}')


@pytest.mark.parametrize(
    "damage, expect",
    [
        (_truncate_array_file, "cannot read the parameters"),
        (_garbage_metadata, "cannot read the parameters"),
        (_config_not_json, "config.json: invalid model config"),
        (_config_a_list, "config.json: invalid model config (not a JSON object)"),
        (
            _config_wrong_types,
            'config.json: invalid model config (dim must be an integer > 0, got "eight")',
        ),
        (_config_other_model, "does not hold the model config.json describes"),
        (_config_huge, f"more than the {model_export.MAX_CONFIG_BYTES} bytes"),
    ],
)
def test_damaged_export_is_one_line(export, tmp_path, damage, expect):
    path = _copy(export, tmp_path)
    damage(path)
    with pytest.raises(model_export.ExportError) as info:
        loading.load_model(str(path))
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert expect in message, message


def test_garbage_checkpoint_metadata_still_loads(export, tmp_path):
    # orbax reads only timestamps from _CHECKPOINT_METADATA and logs its damage.
    path = _copy(export, tmp_path)
    files = _files(path / "params", "_CHECKPOINT_METADATA")
    assert files
    for f in files:
        with open(f, "wb") as fh:
            fh.write(b"\x00\xffnot json{")
    loaded = loading.load_model(str(path))
    assert loaded.model.config == model_export.load_config(export)
