"""Shared pieces of the training tests, also run as a subprocess script.

As a script it runs one job in a fresh interpreter, so the device count can
be forced before jax is imported:
  python tests/train_helpers.py --devices 8 onestep OUT.npz
  python tests/train_helpers.py --devices 8 train WORKDIR --num_steps 2
  python tests/train_helpers.py --devices 2 train WORKDIR --num_processes 2 \
      --process_id 0 --coordinator 127.0.0.1:PORT
  python tests/train_helpers.py --devices 8 restore WORKDIR OUT.npz
"""
import argparse
import os
import sys

import numpy as np

# A Res-HAIR as small as the model allows: compile time dominates the tests.
TEST_MODEL_OVERRIDES = {}
PATCH = 16
BATCH = 8


class FakeLoader:
  """In-memory loader with the data package's interface (a test double).

  Batch i of process p is a pure function of (seed, p, i), so its position
  is the whole iterator state.
  """

  def __init__(self, batch, patch, seed, process_index=0, nan_at=None):
    self.batch, self.patch, self.seed = batch, patch, seed
    self.process_index, self.index, self.nan_at = process_index, 0, nan_at

  def __iter__(self):
    return self

  def __next__(self):
    rng = np.random.default_rng((self.seed, self.process_index, self.index))
    self.index += 1
    clean = rng.uniform(0, 1, (self.batch, self.patch, self.patch, 3))
    noisy = clean + 0.1 * rng.normal(size=clean.shape)
    if self.nan_at is not None and self.index >= self.nan_at:
      noisy[:] = np.nan
    return {'degraded': noisy.astype(np.float32),
            'clean': clean.astype(np.float32),
            'task': np.zeros((self.batch,), np.int32)}

  def get_state(self):
    return {'index': self.index}

  def set_state(self, state):
    self.index = state['index']


def fake_loader_factory(nan_at=None):
  def make(config, seed, process_batch_size):
    import jax  # pylint: disable=g-import-not-at-top
    return FakeLoader(process_batch_size, config.train.patch_size, seed,
                      jax.process_index(), nan_at)
  return make


def tiny_config(**train):
  """configs/demo.py shrunk for tests; `train` overrides config.train."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  config.model.overrides.update(TEST_MODEL_OVERRIDES)
  t = config.train
  t.global_batch_size, t.patch_size = BATCH, PATCH
  t.num_steps, t.warmup_steps, t.learning_rate = 4, 1, 1e-3
  t.log_every, t.image_every, t.checkpoint_every = 1, 2, 2
  t.update(train)
  return config


def params_dict(state):
  """Flat {path: numpy} of params (gathered from all processes)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
  values = multihost_utils.process_allgather([v for _, v in leaves],
                                             tiled=True)
  return {jax.tree_util.keystr(k): np.asarray(v)
          for (k, _), v in zip(leaves, values)}


def _onestep(args):
  """One train step of the same state and batch on 8 devices and on 1."""
  import jax  # pylint: disable=g-import-not-at-top
  from hair_jax import train_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config(warmup_steps=0)
  out = {}
  for n in (jax.device_count(), 1):
    mesh = train_lib.create_mesh(devices=jax.devices()[:n])
    run = train_lib.setup(config, mesh)
    step = train_lib.jit_train_step(run.train_step, run.shardings, mesh)
    local = next(FakeLoader(BATCH, PATCH, seed=0))
    batch = train_lib.make_global_batch(local, train_lib.batch_sharding(mesh),
                                        BATCH)
    state, metrics = step(run.state, batch)
    for k, v in params_dict(state).items():
      out[f'{n}/{k}'] = v
    out[f'{n}/loss'] = np.asarray(metrics['loss'])
  np.savez(args.out, **out)


def _train(args):
  import jax  # pylint: disable=g-import-not-at-top
  from hair_jax import train_lib  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    train_lib.maybe_initialize_distributed(args.coordinator,
                                           args.num_processes, args.process_id)
  config = tiny_config(num_steps=args.num_steps,
                       checkpoint_every=args.checkpoint_every)
  state, _ = train_lib.train_and_evaluate(
      config, args.workdir, make_loader=fake_loader_factory(), test_sets={})
  params = params_dict(state)
  np.savez(os.path.join(args.workdir, f'params_{jax.process_index()}.npz'),
           **params)
  if args.num_processes > 1:
    jax.distributed.shutdown()


def _restore(args):
  from hair_jax import train_lib  # pylint: disable=g-import-not-at-top
  _, state = train_lib.restore_train_state(tiny_config(), args.workdir)
  np.savez(args.out, **params_dict(state))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--devices', type=int, default=1)
  sub = parser.add_subparsers(dest='mode', required=True)
  p = sub.add_parser('onestep')
  p.add_argument('out')
  p = sub.add_parser('train')
  p.add_argument('workdir')
  p.add_argument('--num_steps', type=int, default=4)
  p.add_argument('--checkpoint_every', type=int, default=2)
  p.add_argument('--num_processes', type=int, default=1)
  p.add_argument('--process_id', type=int, default=0)
  p.add_argument('--coordinator', default=None)
  p = sub.add_parser('restore')
  p.add_argument('workdir')
  p.add_argument('out')
  args = parser.parse_args()
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count='
                             f'{args.devices}')
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_default_matmul_precision', 'highest')
  {'onestep': _onestep, 'train': _train, 'restore': _restore}[args.mode](args)


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  main()
