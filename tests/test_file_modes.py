"""Files the package writes are ordinary files: their mode follows the user's umask (mkstemp
alone would leave every checkpoint, config and export private to the writing uid)."""
import os
import stat

import numpy as np
import pytest

from passl_mixer.fileio import atomic_dir, current_umask, write_text


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_files_and_dirs_follow_the_umask(tmp_path, umask):
    path = str(tmp_path / "metrics.json")
    write_text(path, "{}")
    assert mode(path) == 0o666 & ~umask
    with atomic_dir(str(tmp_path / "export")) as tmp:
        write_text(os.path.join(tmp, "inference.yml"), "a: 1")
    assert mode(tmp_path / "export") == 0o777 & ~umask
    assert mode(tmp_path / "export" / "inference.yml") == 0o666 & ~umask


def test_a_training_checkpoint_follows_the_umask(tmp_path, umask):
    from passl_mixer.engine.checkpoint import save_checkpoint

    path = str(tmp_path / "latest.pdckpt")
    save_checkpoint({"model": {"w": np.zeros(3, np.float32)}, "epoch": 1}, path)
    assert mode(path) == 0o666 & ~umask
