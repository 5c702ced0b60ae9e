"""Shared pieces of the training tests, also run as a subprocess script.

As a script it runs one job in a fresh interpreter, so the device count can
be forced before jax is imported:
  python tests/train_helpers.py --devices 8 onestep OUT.npz
  python tests/train_helpers.py --devices 8 train WORKDIR
  python tests/train_helpers.py --devices 2 train WORKDIR --num_processes 2 \
      --process_id 0 --coordinator 127.0.0.1:PORT
  python tests/train_helpers.py --devices 8 restore WORKDIR OUT.npz
  python tests/train_helpers.py --devices 4 lower cuda OUT.json
It is also a config file: python train.py --config=tests/train_helpers.py
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

# Compiling dominates these tests (XLA:CPU needs minutes for the tiny
# Res-HAIR's train step on this 2-core machine), so the loop tests train
# the smallest Restormer baseline; the train.py test runs Res-HAIR itself.
TEST_MODEL = ("restormer", {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1})
PATCH = 16
BATCH = 8
NUM_STEPS = 4  # the schedule is compiled into the step: keep one value
CACHE_DIR = os.path.join(tempfile.gettempdir(), "hair_jax_test_xla_cache")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.abspath(__file__)


def cache_env():
    """Environment for the persistent XLA cache shared by all test processes."""
    return {
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1",
    }


def use_compilation_cache():
    """Shares the persistent XLA cache with every test process.

    The same train step is compiled by several tests and subprocesses.
    """
    import jax  # pylint: disable=g-import-not-at-top

    jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1)


def subprocess_env():
    """Environment of a CPU subprocess: one device, the shared XLA cache."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **cache_env())
    env.pop("XLA_FLAGS", None)
    return env


# Library log lines that train.py and eval.py must not show.
NOISE = (
    "Unable to initialize backend",  # jax's TPU probe
    "OpenCV",  # tfds: "OpenCV is not installed"
    "transition_steps",  # optax: a warmup of 0 steps
    "Load dataset info",  # tfds
    "Downloading and preparing",  # tfds, building the synthetic sets
    "Shuffling",  # tfds's progress bars, building
)


def assert_quiet(output):
    """`output` (stdout and stderr of a run) holds none of `NOISE`."""
    found = [noise for noise in NOISE if noise in output]
    assert not found, output[-3000:]


def run_helper(*args, devices=1, timeout=300):
    """Runs this file as a script (see the module docstring); must succeed."""
    cmd = [sys.executable, HELPER, "--devices", str(devices), *map(str, args)]
    proc = subprocess.run(
        cmd,
        check=False,
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_tiny(workdir, **train):
    """train_and_evaluate of `tiny_config(**train)` on fake data, no evaluation."""
    from hair_jax import train as hair_train  # pylint: disable=g-import-not-at-top

    config = tiny_config(**train)
    return hair_train.train_and_evaluate(
        config, str(workdir), make_loader=fake_loader_factory(), test_sets={}
    )


def leaves(tree):
    """The leaves of a pytree as numpy arrays."""
    import jax  # pylint: disable=g-import-not-at-top

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


class FakeLoader:
    """In-memory loader with the data package's interface (a test double).

    Batch i of process p is a pure function of (seed, p, i), so its position
    is the whole iterator state.
    """

    def __init__(
        self, batch, patch, seed, process_index=0, nan_at=None, slow_from=None, slow_seconds=0.0
    ):
        self.batch, self.patch, self.seed = batch, patch, seed
        self.process_index, self.index, self.nan_at = process_index, 0, nan_at
        self.slow_from, self.slow_seconds = slow_from, slow_seconds

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng((self.seed, self.process_index, self.index))
        self.index += 1
        if self.slow_from is not None and self.index >= self.slow_from:
            time.sleep(self.slow_seconds)  # leaves time to send a signal
        clean = rng.uniform(0, 1, (self.batch, self.patch, self.patch, 3))
        noisy = clean + 0.1 * rng.normal(size=clean.shape)
        if self.nan_at is not None and self.index >= self.nan_at:
            noisy[:] = np.nan
        return {
            "degraded": noisy.astype(np.float32),
            "clean": clean.astype(np.float32),
            "task": np.zeros((self.batch,), np.int32),
        }

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = state["index"]


def fake_loader_factory(**kwargs):
    """A `make_loader` for train_and_evaluate; kwargs go to FakeLoader."""

    def make(config, seed, process_batch_size):
        import jax  # pylint: disable=g-import-not-at-top

        return FakeLoader(
            process_batch_size, config.train.patch_size, seed, jax.process_index(), **kwargs
        )

    return make


def tiny_config(**train):
    """configs/demo.py shrunk for tests; `train` overrides config.train."""
    from configs import demo  # pylint: disable=g-import-not-at-top

    config = demo.get_config()
    config.model.variant = TEST_MODEL[0]
    config.model.overrides = TEST_MODEL[1]
    t = config.train
    t.global_batch_size, t.patch_size = BATCH, PATCH
    t.num_steps, t.warmup_steps, t.learning_rate = NUM_STEPS, 1, 1e-3
    t.log_every, t.image_every, t.checkpoint_every = 1, 0, 2
    t.ema_decay, t.grad_clip_norm = 0.9, 1.0  # exercise both paths
    t.update(train)
    return config


def get_config():
    """`tiny_config()`: this file is also a config for train.py's --config."""
    return tiny_config()


def params_dict(state):
    """Flat {path: numpy} of params (gathered from all processes)."""
    import jax  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    values = multihost_utils.process_allgather([v for _, v in leaves], tiled=True)
    return {jax.tree_util.keystr(k): np.asarray(v) for (k, _), v in zip(leaves, values)}


def _onestep(args):
    """Two train steps (lr 0, then 1e-3) of the same data on 8 devices and 1."""
    import jax  # pylint: disable=g-import-not-at-top

    from hair_jax import train  # pylint: disable=g-import-not-at-top
    from hair_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    from hair_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

    config = tiny_config()
    out = {}
    for n in (jax.device_count(), 1):
        mesh = train.create_mesh(devices=jax.devices()[:n])
        run = train.setup(config, mesh)
        step = step_lib.jit_train_step(run.train_step, run.shardings, mesh)
        loader, state = FakeLoader(BATCH, PATCH, seed=0), run.initialize()
        for _ in range(2):
            batch = mesh_lib.make_global_batch(next(loader), mesh_lib.batch_sharding(mesh), BATCH)
            state, metrics = step(state, batch)
        for k, v in params_dict(state).items():
            out[f"{n}/{k}"] = v
        out[f"{n}/loss"] = np.asarray(metrics["loss"])
    np.savez(args.out, **out)


def _train(args):
    import jax  # pylint: disable=g-import-not-at-top

    from hair_jax import train  # pylint: disable=g-import-not-at-top

    if args.num_processes > 1:
        train.maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    config = tiny_config(checkpoint_every=args.checkpoint_every)
    loader = fake_loader_factory(slow_from=args.slow_from, slow_seconds=args.slow_seconds)
    state, _ = train.train_and_evaluate(config, args.workdir, make_loader=loader, test_sets={})
    params = params_dict(state)
    np.savez(os.path.join(args.workdir, f"params_{jax.process_index()}.npz"), **params)
    if args.num_processes > 1:
        jax.distributed.shutdown()


def _restore(args):
    from hair_jax import train  # pylint: disable=g-import-not-at-top

    _, state = train.restore_train_state(tiny_config(), args.workdir)
    np.savez(args.out, **params_dict(state))


def _lower(args):
    """Exports the tiny Res-HAIR's sharded train step for another platform.

    The mesh is (data 2, model 2) over 4 CPU devices; the model takes the
    choices of the target platform. Writes what the test checks as JSON.
    """
    import json  # pylint: disable=g-import-not-at-top

    import jax  # pylint: disable=g-import-not-at-top

    from hair_jax import train  # pylint: disable=g-import-not-at-top
    from hair_jax.nn import models  # pylint: disable=g-import-not-at-top
    from hair_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

    config = tiny_config(model_axis_size=2, shard_min_size=2**10)
    config.model.variant, config.model.overrides = "tiny", {}
    mesh = train.create_mesh(2)
    target = models.platform_kind(args.platform)
    run = train.setup(config, mesh, platform=target)
    step = step_lib.jit_train_step(run.train_step, run.shardings, mesh)
    size = models.min_size(models.get_config("tiny"))  # 64: the tiny DAC needs it
    image = jax.ShapeDtypeStruct((4, size, size, 3), jax.numpy.float32)
    batch = {"degraded": image, "clean": image, "task": jax.ShapeDtypeStruct((4,), "int32")}
    exported = jax.export.export(step, platforms=(args.platform,))(run.abstract_state, batch)
    text = exported.mlir_module()
    facts = {
        "platforms": list(exported.platforms),
        "nr_devices": exported.nr_devices,
        "sharded_params": sum("model" in str(s.spec) for s in jax.tree.leaves(run.shardings)),
        "while_loops": text.count("stablehlo.while"),
        "resolved": dataclasses.asdict(run.model_config.resolved(target)),
    }
    with open(args.out, "w") as f:
        json.dump(facts, f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("onestep")
    p.add_argument("out")
    p = sub.add_parser("train")
    p.add_argument("workdir")
    p.add_argument("--slow_from", type=int, default=None)
    p.add_argument("--slow_seconds", type=float, default=0.0)
    p.add_argument("--checkpoint_every", type=int, default=2)
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--coordinator", default=None)
    p = sub.add_parser("restore")
    p.add_argument("workdir")
    p.add_argument("out")
    p = sub.add_parser("lower")
    p.add_argument("platform")
    p.add_argument("out")
    args = parser.parse_args()
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    import jax  # pylint: disable=g-import-not-at-top

    jax.config.update("jax_default_matmul_precision", "highest")
    {"onestep": _onestep, "train": _train, "restore": _restore, "lower": _lower}[args.mode](args)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
