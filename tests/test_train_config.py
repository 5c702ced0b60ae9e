"""Tests of hair_jax.train.config: names, misspelt fields, resuming another run."""

import json
import os

import pytest
import train_helpers
from absl import flags
from ml_collections import config_flags

from hair_jax.nn import models
from hair_jax.train import config as config_lib
from hair_jax.train.defaults import model_overrides


def _saved(config):
    """The config as a run's config.json holds it."""
    return json.loads(config.to_json_best_effort(indent=2, sort_keys=True))


def test_model_config_names_the_variant():
    config = train_helpers.tiny_config()
    assert config_lib.model_config(config).dim == 8
    config.model.variant = "restormr"
    with pytest.raises(config_lib.ConfigError, match=r"config.model: unknown model variant"):
        config_lib.model_config(config)


def test_check_config_rejects_unknown_data_names():
    config_lib.check_config(train_helpers.tiny_config())
    config = train_helpers.tiny_config()
    config.data.name = "synthetc"
    with pytest.raises(config_lib.ConfigError, match=r"config.data: unknown data name 'synthetc'"):
        config_lib.check_config(config)
    config = train_helpers.tiny_config()
    config.data.test_sets = ("sots",)  # a real test set, not a synthetic one
    with pytest.raises(config_lib.ConfigError, match=r"unknown test sets \['sots'\]"):
        config_lib.check_config(config)


def test_unknown_field_explains_the_first_bad_key():
    config = train_helpers.tiny_config()
    assert config_lib.unknown_field(config, "train.log_every") is None
    assert config_lib.unknown_field(config, "model.overrides.dim") is None
    assert config_lib.unknown_field(config, "train.log_evry") == (
        "config.train has no field 'log_evry' (did you mean 'log_every'?)"
    )
    assert config_lib.unknown_field(config, "trian.seed").startswith("config has no field 'trian'")
    assert config_lib.unknown_field(config, "train.seed.x") == (
        "config.train.seed (int) has no field 'x'"
    )


def test_resumable_fields_may_differ_others_may_not():
    saved = _saved(train_helpers.tiny_config())
    resumed = train_helpers.tiny_config(
        num_steps=100, log_every=7, checkpoint_every=9, keep_checkpoints=1, max_steps_per_run=3
    )
    resumed.data.data_dir = "/elsewhere"
    resumed.data.num_workers = 2
    resumed.eval.max_images_per_set = 1
    resumed.name = "renamed"
    assert config_lib.config_differences(saved, resumed) == []

    other = train_helpers.tiny_config(seed=1, ema_decay=0.0)
    other.model.overrides.dim = 16
    other.data.synthetic_five_task = True
    assert config_lib.config_differences(saved, other) == [
        ("data.synthetic_five_task", False, True),
        ("model.dim", 8, 16),
        ("train.ema_decay", 0.9, 0.0),
        ("train.seed", 0, 1),
    ]
    # A field the saved run did not have counts as a difference too.
    del saved["train"]["grad_clip_norm"]
    [(field, old, new)] = config_lib.config_differences(saved, train_helpers.tiny_config())
    assert (field, repr(old), new) == ("train.grad_clip_norm", "absent", 1.0)


def test_check_resume_reads_the_workdirs_config_json(tmp_path):
    config = train_helpers.tiny_config()
    config_lib.check_resume(config, str(tmp_path))  # no config.json: a new run
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    config_lib.check_resume(train_helpers.tiny_config(num_steps=50), str(tmp_path))
    config.model.variant = "tiny"
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.check_resume(config, str(tmp_path))
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "config.json") in message
    assert "model.arch (saved 'restormer', now 'res_hair')" in message
    assert "new --workdir" in message
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(config_lib.ConfigError, match="is not valid JSON"):
        config_lib.check_resume(config, str(tmp_path))


def test_config_error_is_a_value_error():
    assert issubclass(config_lib.ConfigError, ValueError)


def test_every_model_field_is_set_from_the_command_line():
    argv = [
        "train.py",
        "--config.model.overrides.hsn_depth=2",
        "--config.model.overrides.num_box=(2,2,2,2,2)",
        "--config.model.overrides.router_temperature=0.5",
        "--config.model.overrides.scan_blocks=False",
    ]
    flag_values = flags.FlagValues()
    demo = os.path.join(train_helpers.ROOT, "configs", "demo.py")
    config_flags.DEFINE_config_file("config", demo, flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    cfg = config_lib.model_config(flag_values.config)
    assert cfg == models.get_config(
        "tiny", hsn_depth=2, num_box=(2, 2, 2, 2, 2), router_temperature=0.5, scan_blocks=False
    )


def test_a_model_named_another_way_or_saved_with_fewer_fields_resumes():
    config = train_helpers.tiny_config()
    config.model.variant, config.model.overrides = "tiny", model_overrides()
    saved = json.loads(config.to_json_best_effort())
    # As saved before every field was listed: the variant's own values, in full.
    saved["model"] = {
        "variant": "res_hair",
        "overrides": {
            "dim": 16,
            "num_blocks": [1, 2, 2, 1],
            "num_refinement_blocks": 1,
            "remat": "auto",
        },
    }
    assert config_lib.config_differences(saved, config) == []
    config.model.overrides.hsn_depth = 2
    assert config_lib.config_differences(saved, config) == [("model.hsn_depth", 3, 2)]
