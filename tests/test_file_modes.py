"""Files the package writes get the mode a plain open() would give them under the umask."""

import os
import stat

import pytest
from flax import nnx

from hair_jax.io import files, model_export
from hair_jax.nn import models


@pytest.fixture(params=[0o022, 0o077])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_and_exports_follow_the_umask(tmp_path, mask):
    path = tmp_path / "results.json"
    files.write_atomic(str(path), b"{}")
    assert _mode(path) == 0o666 & ~mask  # 0644 under 022: others can read it
    files.write_atomic(str(path), b"[]")  # replacing keeps it so
    assert _mode(path) == 0o666 & ~mask
    export = tmp_path / "export"
    model_export.save_model(models.build_model("tiny", arch="restormer", rngs=nnx.Rngs(0)), export)
    assert _mode(export) == 0o777 & ~mask
    assert _mode(export / "config.json") == 0o666 & ~mask
    for root, dirs, names in os.walk(export):
        for name in dirs:
            assert _mode(os.path.join(root, name)) & 0o700 == 0o700
        for name in names:  # orbax's own files: whatever open() gives, never less than the owner's
            assert _mode(os.path.join(root, name)) & 0o600 == 0o600
    assert _mode(files.temp_dir(".tmp-", str(tmp_path))) == 0o777 & ~mask
