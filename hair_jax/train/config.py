"""What a run config names, and the mistakes caught before a run starts.

A `ConfigError` is a mistake the user fixes in the config or on the command
line: an unknown model or data name, a dataset that was not built, a workdir
that holds a run of another model. Its message is one line naming the field,
name, file or workdir and what to do; train.py prints it without a traceback
and exits with code 2. `train_and_evaluate` runs these checks before it
writes or restores anything, so a mistaken run leaves the workdir as it was.
"""

import dataclasses
import difflib
import json
import os

import ml_collections

from hair_jax import data
from hair_jax.evaluation import evaluators
from hair_jax.nn import models
from hair_jax.train.objective import Objective

CONFIG_FILE = "config.json"

# Fields that may change when a run resumes: its length, how often it logs and
# saves, the device layout, where the data lives and how it is read, and the
# evaluation. Every other difference (model, data, seed, batch, patch,
# optimizer, schedule shape, EMA) makes a different run, and several of them
# change the checkpoint's shapes or structure.
RESUMABLE_FIELDS = (
    "name",
    "train.num_steps",
    "train.num_epochs",
    "train.log_every",
    "train.image_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.max_steps_per_run",
    "train.model_axis_size",
    "train.shard_min_size",
    # How the model computes, not what it computes: same parameters.
    "model.remat",
    "model.scan_blocks",
    "model.dtype",
    "model.conv_impl",
    "data.data_dir",
    "data.train_root",
    "data.test_root",
    "data.folders",
    "data.test_sets",
    "data.num_workers",
    "data.num_threads",
    "data.prefetch",
    "eval",
    "evals",
)


class ConfigError(ValueError):
    """A config that cannot run as given; the message says what to change."""


def model_config(config):
    """The `models.ModelConfig` named by config.model (variant + overrides).

    Raises:
      ConfigError: an unknown variant, or overrides the ModelConfig rejects.
    """
    try:
        return _model(config.model.variant, config.model.get("overrides", {}))
    except (TypeError, ValueError) as e:  # get_config's and ModelConfig's own checks
        raise ConfigError(f"config.model: {e}") from None


def _model(variant, overrides):
    """`variant` with the overrides that are set (None: the variant's value)."""
    overrides = {
        k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None
    }
    return models.get_config(variant, **overrides)


def objective(config) -> Objective:
    """The training loss's options, `config.hair` (ConfigError if they are wrong)."""
    try:
        return Objective.from_config(config, model_config(config))
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def check_config(config):
    """Raises ConfigError unless config names a known model, data, tasks and loss."""
    objective(config)
    try:
        evaluators.from_config(config.get("evals", {}), {})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        data.tasks_of(config.data)
        data.test_sets_of(config.data)
    except ValueError as e:  # the data package's name checks
        raise ConfigError(f"config.data: {e}") from None


def unknown_field(config, path):
    """Why dotted `path` names no field of `config`, or None if it does.

    For command lines: ml_collections reports a misspelt --config.<path> as a
    bare KeyError/AttributeError naming only the last key.
    """
    node, keys = config, path.split(".")
    for i, key in enumerate(keys):
        parent = ".".join(["config", *keys[:i]])
        if not isinstance(node, (dict, ml_collections.ConfigDict)):
            return f"{parent} ({type(node).__name__}) has no field {key!r}"
        if key not in node:
            close = difflib.get_close_matches(key, [str(k) for k in node.keys()], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"{parent} has no field {key!r}{hint}"
        node = node[key]
    return None


def _flatten(tree, prefix=""):
    """{'a.b': leaf} of nested dicts."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def _resumable(field):
    return any(field == f or field.startswith(f + ".") for f in RESUMABLE_FIELDS)


class _Absent:
    def __repr__(self):
        return "absent"


_ABSENT = _Absent()


# Fields added after runs were saved, with the value that means what those
# runs did: a saved config without one resumes when the new value is this.
LATER_DEFAULTS = {f"hair.{k}": v for k, v in dataclasses.asdict(Objective()).items()}


def config_differences(saved, config):
    """[(field, saved value, new value)] that forbid resuming, sorted by field.

    Args:
      saved: a run's config as read back from its config.json (a dict).
      config: the new ConfigDict.
    """
    # The same JSON round trip as the saved file: tuples become lists.
    new_tree = json.loads(config.to_json_best_effort(sort_keys=True))
    new, old = _flatten(_resolved(new_tree)), _flatten(_resolved(saved))
    for field, value in LATER_DEFAULTS.items():
        if field not in old and new.get(field, value) == value:
            old[field] = new.get(field, value)
    return [
        (field, old.get(field, _ABSENT), new.get(field, _ABSENT))
        for field in sorted(set(old) | set(new))
        if not _resumable(field) and old.get(field, _ABSENT) != new.get(field, _ABSENT)
    ]


def _resolved(tree: dict) -> dict:
    """A saved config with `model` replaced by the typed config it builds (every field).

    Runs saved before every model field was listed, or naming the same model
    another way (a variant plus overrides), then compare equal.
    """
    model = tree.get("model", {})
    try:
        cfg = _model(model.get("variant"), model.get("overrides", {}))
    except (TypeError, ValueError, AttributeError):
        return tree  # compared as written; check_config reports the mistake
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    return {**tree, "model": fields}


def check_resume(config, workdir):
    """Raises ConfigError if `workdir` holds a run of another config.

    Only the fields outside RESUMABLE_FIELDS must match the workdir's
    config.json; a workdir without one passes.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        try:
            saved = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); use a new --workdir") from None
    differences = config_differences(saved, config)
    if differences:
        shown = ", ".join(f"{k} (saved {old!r}, now {new!r})" for k, old, new in differences[:3])
        more = f" and {len(differences) - 3} more fields" if len(differences) > 3 else ""
        raise ConfigError(
            f"{path} differs from this config in {shown}{more}; "
            "use a new --workdir, or the saved values to resume that run"
        )
