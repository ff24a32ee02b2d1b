"""No hang, ever: whatever fails while loading data -- an unreadable class, a transform, batching
images of unequal shapes, a worker killed by the system -- the run stops within seconds with one
message naming the file and the transform, exit status 2 and no traceback; with 0 or 2 workers,
in training and in evaluation, in one process or two (paddle.distributed.launch, gloo).

Real Paddle, real files, tiny data. The subprocess runs are bounded by ``timeout``: a hang fails
the test instead of stalling the suite."""
import os
import shutil
import signal
import threading
import time

import numpy as np
import paddle
import pytest
from PIL import Image

import passl_mixer as pm
from conftest import (ROOT, TINY_CLASSES, make_image_folder, run_tool, tiny_train_config,
                      write_yaml)
from passl_mixer.data import build_dataloader
from passl_mixer.data.loader import SLOTS_PER_WORKER, Loader, _WorkerPool, collate
from passl_mixer.data.sampler import DistributedBatchSampler
from passl_mixer.data.transforms import SampleError, check_output_size
from passl_mixer.checkpoints.weights import save_weights
from passl_mixer.errors import ConfigError, DataError
from passl_mixer.registry import TRANSFORMS

TIMEOUT = 120  # seconds; a run that fails cleanly ends in well under 20
MARK = (1, 2, 3)  # top-left pixel of the one image the FailOnMarked transform rejects

# A tool run with a transform that fails on the marked image: a user's custom transform with a
# bug, registered the way a plugin would, before the tool runs.
WRAPPER = '''
import runpy, sys
from passl_mixer.registry import TRANSFORMS

@TRANSFORMS.register()
class FailOnMarked:
    def __call__(self, img, rng):
        if img.getpixel((0, 0)) == {mark}:
            raise ValueError("cannot handle this image")
        return img

    def __repr__(self):
        return "FailOnMarked()"

tool = sys.argv[1]
sys.argv = [tool] + sys.argv[2:]
runpy.run_path(tool, run_name="__main__")
'''.format(mark=MARK)


def mark(path):
    """Make ``path`` the image FailOnMarked rejects."""
    pixels = np.asarray(Image.open(path).convert("RGB")).copy()
    pixels[0, 0] = MARK
    Image.fromarray(pixels).save(path)


def garbage_class(folder, n=40):
    """A class folder of ``n`` unreadable files: more than MAX_READ_ATTEMPTS (32) in a row."""
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    for i in range(n):
        with open(os.path.join(folder, f"{i:03d}.png"), "wb") as f:
            f.write(b"not a png")


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Three data roots and a weights file for the tiny model:
    unreadable/: train and val each hold a class of 40 unreadable files;
    marked/: one train and one val image are marked for FailOnMarked; val_odd/ is val with one
    24x16 image among the 16x16 ones."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    unreadable = make_image_folder(str(tmp / "unreadable"))
    for split in ("train", "val"):
        garbage_class(os.path.join(unreadable, split, f"class_{TINY_CLASSES - 1}"))
    marked = make_image_folder(str(tmp / "marked"))
    mark(os.path.join(marked, "train", "class_2", "005.png"))
    mark(os.path.join(marked, "val", "class_1", "003.png"))
    odd = os.path.join(marked, "val_odd")
    shutil.copytree(os.path.join(marked, "val"), odd)
    Image.new("RGB", (24, 16), (90, 90, 90)).save(os.path.join(odd, "class_2", "odd.png"))
    wrapper = tmp / "with_failing_transform.py"
    wrapper.write_text(WRAPPER, encoding="utf-8")
    cfg = tiny_train_config(marked, str(tmp / "unused"))
    paddle.seed(0)
    weights = str(tmp / "w.pdparams")
    save_weights({k: v.numpy() for k, v in pm.build_model(cfg["model"]).state_dict().items()},
                 weights)
    return {"unreadable": unreadable, "marked": marked, "odd": odd, "wrapper": str(wrapper),
            "weights": weights, "tmp": tmp}


def run_failing(args, tmp_path, launch_procs=0):
    """Run a tool that must fail; return (stdout + stderr, and the launch logs if any)."""
    start = time.time()
    proc = run_tool(args, cwd=str(tmp_path), launch_procs=launch_procs, timeout=TIMEOUT,
                    check=False)
    elapsed = time.time() - start
    logs = ""
    log_dir = tmp_path / "log"
    if launch_procs and log_dir.is_dir():
        logs = "".join(p.read_text(errors="replace") for p in sorted(log_dir.iterdir())
                       if p.name.startswith("workerlog"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out + logs, out + logs
    assert "error: " in out, out
    assert elapsed < TIMEOUT
    return " ".join(out.split()), " ".join(logs.split())  # the message is wrapped at 100 columns


def tool_args(tool, cfg_path, *overrides, wrapper=None):
    """Arguments for run_tool: tools/<tool>.py -c CFG -o ..., run through ``wrapper`` if set."""
    script = f"tools/{tool}.py"
    args = ["-c", cfg_path, *sum((["-o", o] for o in overrides), [])]
    return [wrapper, os.path.join(ROOT, script), *args] if wrapper else [script, *args]


def config(tmp_path, root, val_root=None, val_transforms=None, train_transforms=None,
           workers=0, **train):
    cfg = tiny_train_config(root, str(tmp_path / "out"), **train)
    for section in ("train", "val"):
        cfg["data"][section]["num_workers"] = workers
    if val_root:
        cfg["data"]["val"]["dataset"]["root"] = val_root
    if val_transforms is not None:
        cfg["data"]["val"]["transforms"] = val_transforms
    if train_transforms is not None:
        cfg["data"]["train"]["transforms"] = train_transforms
    return write_yaml(tmp_path / "c.yaml", cfg)


FAILING_TRAIN = [{"name": "FailOnMarked"}, {"name": "RandomResizedCrop", "size": 16},
                 {"name": "Normalize"}]
FAILING_VAL = [{"name": "FailOnMarked"}, {"name": "Resize", "size": [16, 16]},
               {"name": "Normalize"}]


# -- tools, one process ------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_train_stops_on_a_class_of_unreadable_images(bad, tmp_path, workers):
    out, _ = run_failing(tool_args("train", config(tmp_path, bad["unreadable"], workers=workers)),
                         tmp_path)
    assert f"class_{TINY_CLASSES - 1}" in out and "none of the 32 consecutive images" in out
    assert "could be read" in out


@pytest.mark.parametrize("workers", [0, 2])
def test_train_names_the_file_and_the_transform_that_failed(bad, tmp_path, workers):
    cfg = config(tmp_path, bad["marked"], train_transforms=FAILING_TRAIN, workers=workers)
    out, _ = run_failing(tool_args("train", cfg, wrapper=bad["wrapper"]), tmp_path)
    path = os.path.join(bad["marked"], "train", "class_2", "005.png")
    assert f"('{path}') failed in transform FailOnMarked(): ValueError: cannot handle this " \
           f"image" in out
    assert out.count("error: ") == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_names_the_file_and_the_transform_that_failed(bad, tmp_path, workers):
    cfg = config(tmp_path, bad["marked"], val_transforms=FAILING_VAL, workers=workers)
    args = tool_args("eval", cfg, f"weights={bad['weights']}", wrapper=bad["wrapper"])
    out, _ = run_failing(args, tmp_path)
    path = os.path.join(bad["marked"], "val", "class_1", "003.png")
    assert f"Sample 9 ('{path}') failed in transform FailOnMarked()" in out


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_of_images_of_unequal_shapes_names_them(bad, tmp_path, workers):
    # [Normalize] sets no size: allowed (images of one size need none), so the 24x16 image is
    # found when its batch is made
    cfg = config(tmp_path, bad["marked"], val_root=bad["odd"],
                 val_transforms=[{"name": "Normalize"}], workers=workers)
    out, _ = run_failing(tool_args("eval", cfg, f"weights={bad['weights']}"), tmp_path)
    odd = os.path.join(bad["odd"], "class_2", "odd.png")
    assert "Cannot batch the samples of data.val" in out
    assert f"('{odd}') has shape [3, 16, 24]" in out and "has shape [3, 16, 16]" in out
    assert "must end in a fixed size" in out


@pytest.mark.parametrize("tool", ["train", "eval"])
def test_a_val_pipeline_without_a_fixed_size_is_a_config_error(bad, tmp_path, tool):
    cfg = config(tmp_path, bad["marked"], val_transforms=[{"name": "Resize", "size": 16},
                                                          {"name": "Normalize"}])
    args = tool_args(tool, cfg, *([f"weights={bad['weights']}"] if tool == "eval" else []))
    out, _ = run_failing(args, tmp_path)
    assert "data.val.transforms does not end in a fixed image size: from Resize(size=16, " \
           "interpolation='bicubic') on" in out
    assert not (tmp_path / "out" / "checkpoints").exists()  # stopped before training


# -- two processes -----------------------------------------------------------------------------
def first_sample_of_rank(root, rank, seed=3, batch_size=8):
    """The path of the first sample ``rank`` of 2 loads in epoch 0 (training order)."""
    dataset = pm.DATASETS.build({"name": "ImageFolder", "root": os.path.join(root, "train")})
    sampler = DistributedBatchSampler(len(dataset), batch_size, num_replicas=2, rank=rank,
                                      shuffle=True, seed=seed)
    return dataset.samples[next(iter(sampler))[0]][0]


@pytest.mark.parametrize("workers", [0, 2])
def test_two_processes_stop_together_with_the_failing_rank_message(bad, tmp_path, workers):
    """Rank 1's first sample fails: rank 0 must not wait in the gradient all-reduce, nor die on
    a lost peer with a traceback. Both ranks raise the same DataError; the launcher shows it
    (from rank 0's output) and exits non-zero."""
    root = make_image_folder(str(tmp_path / "data"))
    path = first_sample_of_rank(root, rank=1)
    mark(path)
    cfg = config(tmp_path, root, train_transforms=FAILING_TRAIN, workers=workers)
    args = tool_args("train", cfg, "data.train.batch_size=8", wrapper=bad["wrapper"])
    out, logs = run_failing(args, tmp_path, launch_procs=2)
    message = "Data loading failed on rank 1 of 2: Sample"
    assert message in out and f"('{path}') failed in transform FailOnMarked()" in out
    assert logs.count(message) == 2  # each rank reports it, once
    assert not (tmp_path / "out" / "checkpoints").exists()


# -- the loader ----------------------------------------------------------------------------------
class Numbers:
    """Sample i: a (3, 4, 4) array of i + 100 * epoch; optional failures."""

    def __init__(self, n=40, fail=None, kill=None, delay=0.0, size=4, dtypes=(np.float32,)):
        self.samples = [(f"/data/{i:02d}.png", i % 3) for i in range(n)]
        self.fail, self.kill, self.delay, self.epoch = fail, kill, delay, 0
        self.size, self.dtypes = size, dtypes  # sample i's dtype: dtypes[i % len(dtypes)]

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        time.sleep(self.delay)
        if i == self.fail:
            raise ZeroDivisionError("division by zero")
        if i == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        return (np.full((3, self.size, self.size), i + 100 * self.epoch,
                        self.dtypes[i % len(self.dtypes)]), np.int64(i % 3))


def loader(dataset, workers, batch_size=4, sample_nbytes=3 * 4 * 4 * 4):
    """Batches of ``dataset`` (Numbers); workers hand them over in shared-memory slots sized
    for ``sample_nbytes`` a sample."""
    sampler = DistributedBatchSampler(len(dataset), batch_size, shuffle=False, drop_last=False)
    return Loader(dataset, sampler, workers, where="data.train", sample_nbytes=sample_nbytes)


def loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("passl-mixer")]


def all_dead(processes):
    for p in processes:
        p.join(5)
    return not any(p.is_alive() for p in processes)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_sample_is_one_data_error_and_ends_the_workers(workers):
    data = loader(Numbers(fail=13), workers)
    data.set_epoch(0)
    with pytest.raises(SampleError) as err:
        for _ in data:
            pass
    assert str(err.value).startswith("Sample 13 ('/data/13.png') failed: ZeroDivisionError: "
                                     "division by zero (raised at test_bad_inputs_loader.py:")
    assert (err.value.index, err.value.path) == (13, "/data/13.png")
    assert data._pool is None and not loader_threads()


def test_a_killed_worker_is_a_data_error_not_a_hang():
    data = loader(Numbers(kill=9), 2)
    data.set_epoch(0)
    start = time.time()
    with pytest.raises(DataError, match="A data-loading worker process of data.train died "
                                        r"\(killed by SIGKILL\)"):
        for _ in data:
            pass
    assert time.time() - start < 30 and data._pool is None


def test_workers_persist_across_epochs_and_end_on_close():
    data = loader(Numbers(), 2)
    pids = []
    for epoch in range(2):
        data.set_epoch(epoch)
        batches = [x.numpy() for x, _ in data]
        assert batches[0][:, 0, 0, 0].tolist() == [100 * epoch + i for i in range(4)]
        pids.append([p.pid for p in data._workers])
    assert pids[0] == pids[1] and len(pids[0]) == 2
    workers = list(data._workers)
    data.close()
    assert all_dead(workers)


@pytest.mark.parametrize("workers", [0, 2])
def test_stopping_early_leaves_no_worker_or_thread(workers):
    data = loader(Numbers(delay=0.01), workers)
    data.set_epoch(1)
    for k, (images, labels) in enumerate(data):
        if k == 2:
            started = list(data._workers)
            break
    assert images.numpy()[:, 0, 0, 0].tolist() == [108, 109, 110, 111]
    assert data._pool is None and all_dead(started) and not loader_threads()
    data.set_epoch(2)  # and the loader still works: new workers
    assert len([x for x, _ in data]) == 10
    data.close()


def test_ctrl_c_ends_the_workers():
    data = loader(Numbers(delay=0.2), 2)
    data.set_epoch(0)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = []
    with pytest.raises(KeyboardInterrupt):
        for _ in data:
            started = started or list(data._workers)
    timer.join()
    assert data._pool is None and all_dead(started)


def test_held_batches_never_change_while_the_workers_reuse_their_slots():
    # 10 batches an epoch, 5 per worker: each worker's 3 shared-memory slots are reused while
    # every batch already yielded is still held
    data = loader(Numbers(), 2)
    held = []
    for epoch in range(2):
        data.set_epoch(epoch)
        for k, (images, labels) in enumerate(data):
            held.append(([4 * k + i for i in range(4)], 100 * epoch, images, labels))
            for samples, offset, x, y in held:
                assert x.numpy()[:, 0, 0, 0].tolist() == [offset + i for i in samples]
                assert (x.numpy() == x.numpy()[:, :1, :1, :1]).all()
                assert y.numpy().tolist() == [i % 3 for i in samples]
    assert len(held) == 20
    assert data._pool.piped_arrays == 0  # every array came through a slot
    data.close()


def test_a_worker_never_writes_a_slot_before_it_is_released():
    # One worker, batches of 4: more tasks submitted than it has slots, none released
    pool = _WorkerPool(1, Numbers(), "data.train", slot_bytes=4096)
    try:
        assert SLOTS_PER_WORKER == 3
        for k in range(4):
            pool.submit(k, 0, [4 * k + i for i in range(4)])
        held = [pool.result(k) for k in range(4)]  # views of the slots, none released
        assert sorted(pool.slot_of) == [0, 1, 2] and pool.piped_arrays == 2  # batch 3: the pipe
        pool.release(0)
        pool.submit(4, 0, [16, 17, 18, 19])  # takes batch 0's slot
        held.append(pool.result(4))
        assert pool.slot_of[4] == 0 and pool.piped_arrays == 2
        for k, (images, labels) in enumerate(held):
            if k == 0:  # released: its slot now holds batch 4
                assert images[:, 0, 0, 0].tolist() == [16, 17, 18, 19]
                continue
            assert images[:, 0, 0, 0].tolist() == [4 * k + i for i in range(4)]
            assert labels.tolist() == [(4 * k + i) % 3 for i in range(4)]
    finally:
        pool.close(kill=False)


def test_batches_that_do_not_fit_a_slot_take_the_pipe():
    # (3, 32, 32) float32 samples against slots sized for (3, 4, 4): the images take the pipe,
    # the labels the slot; samples of mixed dtypes are stacked outside the slot, then copied in
    for dataset, sample_nbytes, piped in [(Numbers(size=32), 3 * 4 * 4 * 4, 10),
                                          (Numbers(dtypes=(np.float32, np.float64)), 192, 0)]:
        expected = [[x.numpy(), y.numpy()] for x, y in loader(dataset, 0)]
        data = loader(dataset, 2, sample_nbytes=sample_nbytes)
        data.set_epoch(0)
        got = [[x.numpy(), y.numpy()] for x, y in data]
        assert len(got) == len(expected) == 10
        for a, b in zip(got, expected):
            assert a[0].dtype == b[0].dtype
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        assert data._pool.piped_arrays == piped
        data.close()


def test_collate_names_samples_of_unequal_shapes():
    dataset = Numbers()
    samples = [(np.zeros((3, 4, 4), np.float32), 0), (np.zeros((3, 4, 6), np.float32), 1)]
    with pytest.raises(DataError) as err:
        collate(samples, [5, 7], dataset, "data.val")
    assert "sample 5 ('/data/05.png') has shape [3, 4, 4]; sample 7 ('/data/07.png') has shape " \
           "[3, 4, 6]" in str(err.value)
    batch = collate([([np.ones((3, 2, 2))] * 2, np.int64(1))] * 3, [0, 1, 2])
    assert len(batch) == 2 and [v.shape for v in batch[0]] == [(3, 3, 2, 2)] * 2
    assert batch[1].dtype == np.int64 and batch[1].shape == (3,)


@TRANSFORMS.register(name="_FailOnWide")
class FailOnWide:
    """A view transform with a bug that only a wide image triggers."""

    def __call__(self, img, rng):
        if img.width > img.height and img.height < 100:
            raise IndexError("list index out of range")
        return img

    def __repr__(self):
        return "_FailOnWide()"


def test_multiview_errors_name_the_view_and_the_transform(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (8 if i != 2 else 12, 8)).save(folder / f"{i}.png")
    crop = {"name": "RandomResizedCrop", "size": 8}
    section = {"dataset": {"name": "MultiView",
                           "dataset": {"name": "ImageFolder", "root": str(tmp_path)},
                           "views": [[crop, {"name": "Normalize"}],
                                     [{"name": "_FailOnWide"}, crop, {"name": "Normalize"}]]},
               "batch_size": 4, "num_workers": 2}
    data = build_dataloader(section, train=False, world_size=1, rank=0)
    data.set_epoch(0)
    with pytest.raises(SampleError, match=r"Sample 2 \('.*2.png'\) failed in transform "
                                          r"_FailOnWide\(\) of view 1: IndexError: list index "
                                          r"out of range"):
        next(iter(data))


def test_same_multiview_batches_with_zero_and_two_workers(tiny_data):
    views = [[{"name": "RandomResizedCrop", "size": 16}, {"name": "ColorJitter", "prob": 1.0},
              {"name": "Normalize"}],
             [{"name": "RandomResizedCrop", "size": 16}, {"name": "Normalize"}]]
    section = {"dataset": {"name": "MultiView", "views": views,
                           "dataset": {"name": "ImageFolder",
                                       "root": os.path.join(tiny_data, "train")}},
               "batch_size": 16}
    runs = []
    for workers in (0, 2):
        data = build_dataloader(dict(section, num_workers=workers), train=True, seed=4,
                                world_size=1, rank=0)
        data.set_epoch(1)
        runs.append([[v.numpy() for v in views] + [labels.numpy()] for views, labels in data])
        data.close()
    assert len(runs[0]) == len(runs[1]) == 6
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("transforms, where", [
    ([{"name": "Resize", "size": 16}, {"name": "Normalize"}], "data.val.transforms"),
    ([{"name": "Resize", "size": 20}, {"name": "RandomHorizontalFlip"}, {"name": "Normalize"}],
     "data.val.transforms"),
])
def test_build_rejects_a_pipeline_whose_size_follows_the_input(tiny_data, transforms, where):
    section = {"dataset": {"name": "ImageFolder", "root": os.path.join(tiny_data, "val")},
               "transforms": transforms, "batch_size": 4}
    with pytest.raises(ConfigError, match=rf"{where} does not end in a fixed image size: from "
                                          rf"Resize\(size=\d+, interpolation='bicubic'\) on"):
        build_dataloader(section, train=False, world_size=1, rank=0)


def test_build_checks_each_view_and_allows_pipelines_that_keep_the_size(tiny_data):
    views = [[{"name": "RandomResizedCrop", "size": 16}, {"name": "Normalize"}],
             [{"name": "Resize", "size": 16}, {"name": "Normalize"}]]
    section = {"dataset": {"name": "MultiView", "views": views,
                           "dataset": {"name": "ImageFolder",
                                       "root": os.path.join(tiny_data, "train")}},
               "batch_size": 4}
    with pytest.raises(ConfigError, match=r"data.train.dataset.views\[1\] does not end in a "
                                          r"fixed image size"):
        build_dataloader(section, train=True, world_size=1, rank=0)
    # no size-setting transform: the images keep their size (all 16x16 here), so it is allowed
    keep = {"dataset": {"name": "ImageFolder", "root": os.path.join(tiny_data, "val")},
            "transforms": [{"name": "RandomHorizontalFlip"}, {"name": "Normalize"}],
            "batch_size": 4}
    assert len(build_dataloader(keep, train=False, world_size=1, rank=0)) == 6
    assert check_output_size(keep["transforms"], "x", allow_unchanged=True) is None
    with pytest.raises(ConfigError, match="x sets no image size"):
        check_output_size(keep["transforms"], "x")
    # a misplaced transform fails on the test images: a ConfigError at build, not mid-epoch
    with pytest.raises(ConfigError, match=r"data.val.transforms: RandomResizedCrop.* fails on a "
                                          r"320x240 test image: .*put it before Normalize"):
        build_dataloader(dict(keep, transforms=[{"name": "Normalize"},
                                                {"name": "RandomResizedCrop", "size": 8}]),
                         train=False, world_size=1, rank=0)

