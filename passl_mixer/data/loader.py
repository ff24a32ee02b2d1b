"""Build a data loader from one ``data.train`` / ``data.val`` config section.

The :class:`Loader` is ours, not ``paddle.io.DataLoader``, so that no failure can hang a run:
with ``num_workers: 0`` Paddle builds batches in a thread whose exception is lost (the main
thread then waits forever), and with workers it reports a bare "Blocking queue is killed".
Here every failure -- in a dataset, a transform, batching, or a worker process killed by the
system -- ends the iteration with one :class:`~passl_mixer.errors.DataError` that names the
sample, its file and the transform (see :func:`~.transforms.sample_error`), in every process
of a distributed run.
"""
from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import numbers
import os
import queue
import signal
import sys
import threading
from collections import deque
from multiprocessing.connection import wait as wait_ready
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from ..errors import DataError, PasslMixerError
from ..registry import DATASETS
from ..schema import (Field, NonNegativeInt, PositiveInt, Section, located, section,
                      validate_section)
from .device import DeviceBatchStage
from .sampler import DistributedBatchSampler
from .transforms import (FIXED_SIZE_TRANSFORMS, Compose, SampleError, check_output_size,
                         describe_exception, sample_error, sample_path)



@section("data.train")
@section("data.val")
class LoaderSection(Section):
    """One loader: ``data.train`` or ``data.val``."""
    dataset: Dict[str, Any] = Field(description="{name: ImageFolder|ImageList, root: ...}")
    transforms: Optional[List[Dict[str, Any]]] = Field(
        None, description="the augmentation / preprocessing pipeline, in order")
    batch_size: PositiveInt = Field(description="images per device per step")
    num_workers: NonNegativeInt = Field(0, description="worker processes (0: a background "
                                        "thread loads the data)")
    drop_last: Optional[bool] = Field(None, description="drop the last partial batch (default: "
                                      "true for data.train, false for data.val)")
    shuffle: Optional[bool] = Field(None, description="new order every epoch (default: true for "
                                    "data.train, false for data.val)")
    device_normalize: bool = Field(True, description="run the transforms' closing Normalize / "
                                   "RandomErasing on whole batches on the training device, the "
                                   "workers sending uint8 images (false: per sample in the "
                                   "workers, float32)")

# Batches built ahead of the one in use: by the thread (num_workers 0), and per worker process
# (Paddle's DataLoader keeps the same 2 per worker).
THREAD_PREFETCH = 2
PREFETCH_PER_WORKER = 2
# Shared-memory slots per worker: its PREFETCH_PER_WORKER batches in flight, plus the batch the
# main process is turning into tensors when it hands the worker its next task (see _WorkerPool).
SLOTS_PER_WORKER = PREFETCH_PER_WORKER + 1
# Room per sample in a slot beyond its images: the label and any other small fields, with the
# alignment of each array to SLOT_ALIGN bytes.
SLOT_SMALL_FIELDS = 64
SLOT_ALIGN = 64
# Seconds to wait for the loading thread to finish its current sample when iteration stops.
JOIN_TIMEOUT = 10.0


# -- samples and batches: the same code in the thread and in worker processes ------------------
class _Stopped(Exception):
    """The consumer stopped iterating: the batch being built is not needed."""


def load_sample(dataset, index: int):
    """``dataset[index]``; any failure becomes one :class:`SampleError` naming the sample."""
    try:
        return dataset[index]
    except SampleError:
        raise  # the dataset named the sample, its file and the transform already
    except Exception as exc:  # noqa: BLE001 - a custom dataset may raise anything
        raise sample_error(index, sample_path(dataset, index), exc) from exc


# ``out(shape, dtype)``: an array to stack a field's samples into, or None (a new array).
Allocator = Callable[[Tuple[int, ...], np.dtype], Optional[np.ndarray]]


def make_batch(dataset, indices: Sequence[int], where: str,
               stop: Optional[threading.Event] = None, out: Optional[Allocator] = None):
    """Load the samples ``indices`` and stack them into a batch of numpy arrays (into the
    arrays ``out`` gives, when it gives one)."""
    samples = []
    for index in indices:
        if stop is not None and stop.is_set():
            raise _Stopped()
        samples.append(load_sample(dataset, index))
    return collate(samples, indices, dataset, where, out=out)


def _sample_name(dataset, index: int) -> str:
    path = sample_path(dataset, index)
    return f"sample {index} ('{path}')" if path else f"sample {index}"


def collate(samples: List[Any], indices: Sequence[int], dataset=None, where: str = "data",
            field: tuple = (), out: Optional[Allocator] = None):
    """Stack samples field by field, as ``paddle.io.DataLoader``'s default collation does:
    arrays are stacked, numbers become an array, lists and tuples are collated per element
    (into a list). Arrays of different shapes are a DataError naming the samples' files.
    ``out``: where to stack arrays (a worker's shared-memory slot), see :data:`Allocator`."""
    first = samples[0]
    if isinstance(first, np.ndarray):
        shapes = {}
        for pos, value in enumerate(samples):
            shapes.setdefault(tuple(np.shape(value)), pos)
        if len(shapes) > 1 or not all(isinstance(v, np.ndarray) for v in samples):
            shown = "; ".join(f"{_sample_name(dataset, indices[pos])} has shape {list(shape)}"
                              for shape, pos in list(shapes.items())[:3])
            view = f" (view {field[-1]})" if len(field) > 1 else ""
            raise DataError(f"Cannot batch the samples of {where}{view}: their images have "
                            f"different shapes ({shown}). All images of a batch need one shape, "
                            f"so the transforms must end in a fixed size: "
                            f"{FIXED_SIZE_TRANSFORMS}. Without such a transform every image "
                            f"must already have the same size.")
        target = None
        if out is not None and all(v.dtype == first.dtype for v in samples):
            target = out((len(samples),) + first.shape, first.dtype)
        return np.stack(samples, out=target)
    if isinstance(first, (np.generic, numbers.Number)):
        return np.asarray(samples)
    if isinstance(first, (list, tuple)):
        if any(not isinstance(s, (list, tuple)) or len(s) != len(first) for s in samples):
            raise DataError(f"Cannot batch the samples of {where}: "
                            f"{_sample_name(dataset, indices[0])} has {len(first)} fields but "
                            f"others have another number.")
        return [collate([s[j] for s in samples], indices, dataset, where, field + (j,), out)
                for j in range(len(first))]
    raise DataError(f"Cannot batch the samples of {where}: {_sample_name(dataset, indices[0])} "
                    f"holds a {type(first).__name__}; a dataset must return numpy arrays, "
                    f"numbers, or lists of them.")


def _to_tensors(batch):
    if isinstance(batch, list):
        return [_to_tensors(b) for b in batch]
    return paddle.to_tensor(batch)


# -- num_workers == 0: one thread -------------------------------------------------------------
def _produce(dataset, index_batches, where: str, out: queue.Queue, stop: threading.Event):
    """Thread body: put ("batch", arrays) per batch, or ("error", exception) and stop."""
    for indices in index_batches:
        try:
            item = ("batch", make_batch(dataset, indices, where, stop))
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, re-raised there
            item = ("error", exc)
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                break
            except queue.Full:
                pass
        if item[0] == "error" or stop.is_set():
            return


# -- num_workers > 0: worker processes --------------------------------------------------------
# Not concurrent.futures.ProcessPoolExecutor: its workers share one result pipe, so a worker
# killed while writing a batch (by the system, or by us on Ctrl-C) leaves a half-written message
# that the pool's reader thread then waits on forever. Here every worker has its own task and
# result pipes, so a dead worker breaks only its own pipe, which reads as end-of-file.
def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the process that forked it dies (e.g. killed
    by the distributed launcher), so that no worker outlives its main process."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(dataset, where: str, tasks, results, parent_pid: int,
                 slots: Optional["_Slots"]) -> None:
    """A worker process: for each ``(epoch, indices, slot)`` task, send ``("batch", ...)`` (the
    batch built in shared-memory slot ``slot`` of ``slots`` when it fits, see
    :func:`_send_batch`) or ``("error", exception)``; end on None or when the task pipe closes.
    Numpy and PIL only, never paddle: the main process makes the tensors."""
    # Ctrl-C reaches the whole process group; the main process handles it and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Paddle's fatal-signal handlers, inherited through fork, would print a C++ "FatalError"
    # report when a launcher or the system terminates the worker.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    if os.getppid() != parent_pid:  # the main process died before prctl took effect
        return
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        epoch, indices, slot = task
        writer = _SlotWriter(slots, slot) if slots is not None and slot is not None else None
        try:
            if epoch is not None:  # the worker's copy of the dataset was forked earlier
                dataset.set_epoch(epoch)
            batch = make_batch(dataset, indices, where,
                               out=writer.take if writer is not None else None)
        except Exception as exc:  # noqa: BLE001 - sent to the main process, raised there
            batch, error = None, exc
        try:
            if batch is not None:
                _send_batch(results, batch, where, writer)
                continue
            try:
                results.send(("error", error))
            except OSError:
                raise
            except Exception:  # noqa: BLE001 - an exception that cannot be pickled
                # pickling fails before anything is written, so the pipe is intact: send the text
                results.send(("error", DataError(describe_exception(error))))
        except (EOFError, OSError):
            return  # the main process stopped listening


# -- how a batch crosses from a worker to the main process -------------------------------------
# Through shared memory: each worker has SLOTS_PER_WORKER slots of anonymous shared memory
# (mmap MAP_SHARED | MAP_ANONYMOUS), mapped by the main process before it forks the worker, so
# no name exists that could outlive the processes: the memory is gone when the last of them
# unmaps it or dies. Each task names the slot its batch goes to; the worker stacks the samples
# straight into it and sends only a small pickled header (the batch's list structure, and per
# array its dtype, shape and offset in the slot); the main process reads the arrays in place
# and copies them once, into tensors, before it gives the slot to a new task (the protocol:
# _WorkerPool). Measured on 2 cores (README, "The batch hand-over"): a 4.8 MB uint8 batch of 32
# through a pipe cost the main process 0.12-0.13 CPU-ms an image to receive, the worker 0.10 to
# write, and kept the worker blocked in its write until the main process read it (batches are
# read in order), instead of making its next batch: 2-worker efficiency 86% -> 92%.
# Through the pipe, after the header, as raw bytes received straight into a new array: arrays
# that do not fit in the slot (a pipeline whose output size is not known, see
# build_dataloader), and every array of a loader without slots.
class _Slots:
    """``count`` slots of ``nbytes`` each in one anonymous shared mapping."""

    def __init__(self, count: int, nbytes: int):
        self.nbytes = nbytes
        self.memory = mmap.mmap(-1, count * nbytes)  # MAP_SHARED | MAP_ANONYMOUS on Linux
        # no mmap.close(): numpy views may still export the buffer; unmapped when all are gone
        self.buffer = np.frombuffer(self.memory, np.uint8)

    def slot(self, slot: int) -> np.ndarray:
        return self.buffer[slot * self.nbytes:(slot + 1) * self.nbytes]

    def array(self, slot: int, dtype: str, shape: Tuple[int, ...], offset: int) -> np.ndarray:
        """A view of the array a worker placed at ``offset`` of ``slot``."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if offset < 0 or offset + count * dtype.itemsize > self.nbytes:
            raise RuntimeError(f"a worker placed a {list(shape)} {dtype} array outside its slot")
        start = slot * self.nbytes + offset
        return self.buffer[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


class _SlotWriter:
    """A worker's side of one slot: hands out aligned arrays in it, in order."""

    def __init__(self, slots: _Slots, slot: int):
        self.slot = slot
        self.memory = slots.slot(slot)
        self.base = self.memory.ctypes.data
        self.used = 0

    def take(self, shape: Tuple[int, ...], dtype) -> Optional[np.ndarray]:
        """A new array in the slot, or None when it does not fit (it then takes the pipe)."""
        dtype = np.dtype(dtype)
        start = -(-self.used // SLOT_ALIGN) * SLOT_ALIGN
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if dtype.hasobject or start + size > len(self.memory):
            return None
        self.used = start + size
        return self.memory[start:start + size].view(dtype).reshape(shape)

    def place(self, array: np.ndarray) -> Optional[int]:
        """The offset of ``array`` in the slot, copying it there first if it lies elsewhere;
        None: it does not fit."""
        offset = array.__array_interface__["data"][0] - self.base
        if not (array.flags.c_contiguous and 0 <= offset <= len(self.memory) - array.nbytes):
            target = self.take(array.shape, array.dtype)
            if target is None:
                return None
            target[...] = array
            offset = target.__array_interface__["data"][0] - self.base
        return offset


def _flatten(batch, arrays: List[np.ndarray]):
    if isinstance(batch, list):
        return [_flatten(b, arrays) for b in batch]
    arrays.append(np.ascontiguousarray(batch))
    return len(arrays) - 1


def _unflatten(spec, arrays: List[np.ndarray]):
    if isinstance(spec, list):
        return [_unflatten(s, arrays) for s in spec]
    return arrays[spec]


def _send_batch(conn, batch, where: str, writer: Optional[_SlotWriter] = None) -> None:
    arrays: List[np.ndarray] = []
    spec = _flatten(batch, arrays)
    if any(a.dtype.hasobject for a in arrays):  # checked before anything is written
        conn.send(("error", DataError(f"A batch of {where} holds Python objects (an array of "
                                      f"dtype object); a dataset must return numeric arrays.")))
        return
    offsets = [writer.place(a) if writer is not None else None for a in arrays]
    conn.send(("batch", spec, writer.slot if writer is not None else None,
               [(a.dtype.str, a.shape, offset) for a, offset in zip(arrays, offsets)]))
    for a, offset in zip(arrays, offsets):
        if offset is None and a.nbytes:
            conn.send_bytes(memoryview(a).cast("B"))


def _recv_reply(conn, slots: Optional[_Slots]):
    """(kind, value, piped) from a worker: ("batch", arrays, how many of them came through the
    pipe) or ("error", exception, 0). The arrays in a slot are views of it."""
    reply = conn.recv()
    if reply[0] != "batch":
        return reply[0], reply[1], 0
    _, spec, slot, metas = reply
    arrays, piped = [], 0
    for dtype, shape, offset in metas:
        if offset is not None:
            arrays.append(slots.array(slot, dtype, shape, offset))
            continue
        array = np.empty(shape, dtype)
        if array.nbytes:
            conn.recv_bytes_into(memoryview(array).cast("B"))
        arrays.append(array)
        piped += 1
    return "batch", _unflatten(spec, arrays), piped


class _Worker:
    """One worker process, the main process's ends of its two pipes, and its slots."""

    def __init__(self, ctx, dataset, where: str, name: str, slot_bytes: int):
        # mapped before the fork: the worker inherits the very same pages
        self.slots = _Slots(SLOTS_PER_WORKER, slot_bytes) if slot_bytes > 0 else None
        self.free: Deque[int] = deque(range(SLOTS_PER_WORKER) if self.slots else ())
        task_read, self.tasks = ctx.Pipe(duplex=False)
        self.results, result_write = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_worker_main, name=name, daemon=True,
                                   args=(dataset, where, task_read, result_write, os.getpid(),
                                         self.slots))
        self.process.start()
        # the child's ends: closed here, so the pipes break (end-of-file) when the worker dies
        task_read.close()
        result_write.close()

    def close(self, kill: bool) -> None:
        if kill:
            if self.process.is_alive():
                self.process.kill()  # SIGKILL: a worker has nothing to save
        else:
            try:
                self.tasks.send(None)
            except OSError:
                pass
        self.process.join(None if kill else JOIN_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.tasks.close()
        self.results.close()
        self.slots = None  # unmapped once no view of it is left


class _WorkerPool:
    """``num_workers`` processes forked from this one (so the dataset needs no pickling). Batch
    k goes to worker ``k % num_workers``; each worker answers its tasks in order, so results
    come back in batch order.

    Slot reuse: batch k is built in a slot of its worker taken from that worker's free slots at
    ``submit(k)``, and the slot is free again at ``release(k)``, which the caller does once it
    has copied batch k's arrays (into tensors) and before it asks for ``result(k + 1)``. A
    worker writes only into the slot its task names, so no slot is written while the main
    process reads it. The loader submits batch k + 2N after receiving batch k and before
    releasing it, when worker k % N holds batch k (being copied) and k + N (in flight): 3
    slots, :data:`SLOTS_PER_WORKER`. Should none be free, the batch takes the pipe."""

    def __init__(self, num_workers: int, dataset, where: str, slot_bytes: int = 0):
        ctx = multiprocessing.get_context("fork")
        self.pid = os.getpid()
        self.where = where
        self.workers: List[_Worker] = []
        self.slot_of: Dict[int, int] = {}  # batch -> slot, from submit to release
        self.piped_arrays = 0  # arrays that came through a pipe, not a slot
        try:
            for i in range(num_workers):
                self.workers.append(_Worker(ctx, dataset, where, f"passl-mixer {where} worker {i}",
                                            slot_bytes))
        except BaseException:
            self.close(kill=True)
            raise

    @property
    def processes(self):
        return [w.process for w in self.workers]

    def submit(self, k: int, epoch: Optional[int], indices: List[int]) -> None:
        worker = self.workers[k % len(self.workers)]
        slot = worker.free.popleft() if worker.free else None
        if slot is not None:
            self.slot_of[k] = slot
        try:
            worker.tasks.send((epoch, indices, slot))
        except OSError:  # BrokenPipeError: the worker is gone
            raise DataError(self._death_message(worker)) from None

    def result(self, k: int):
        """The arrays of batch ``k`` (submitted earlier); raises what the worker raised. Arrays
        may be views of a slot: valid until ``release(k)``."""
        worker = self.workers[k % len(self.workers)]
        ready = wait_ready([worker.results, worker.process.sentinel])
        if worker.results not in ready:  # it died without an answer
            raise DataError(self._death_message(worker))
        try:
            kind, value, piped = _recv_reply(worker.results, worker.slots)
        except (EOFError, OSError):  # it died while writing the answer
            raise DataError(self._death_message(worker)) from None
        if kind == "error":
            raise value
        self.piped_arrays += piped
        return value

    def release(self, k: int) -> None:
        """Batch ``k``'s arrays are copied: its slot may take another batch."""
        slot = self.slot_of.pop(k, None)
        if slot is not None and self.workers:
            self.workers[k % len(self.workers)].free.append(slot)

    def _death_message(self, worker: _Worker) -> str:
        worker.process.join(1.0)
        code = worker.process.exitcode
        how = ""
        if code is not None and code < 0:
            try:
                how = f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                how = f" (killed by signal {-code})"
        elif code:
            how = f" (exit code {code})"
        return (f"A data-loading worker process of {self.where} died{how}. A worker killed by "
                f"SIGKILL was most likely ended by the system's out-of-memory killer (see "
                f"'dmesg'): lower num_workers or batch_size of {self.where}.")

    def close(self, kill: bool) -> None:
        if os.getpid() != self.pid:  # a forked copy: the workers are not this process's
            return
        for worker in self.workers:
            worker.close(kill)
        self.workers = []


class Loader:
    """Batches of one data section, epoch-aware, that fail loudly instead of hanging.

    Iterating yields ``[images, labels]``: a float32 ``[B, 3, H, W]`` and an int64 ``[B]``
    paddle Tensor, ``B`` = ``batch_size`` (smaller only in the last batch when ``drop_last``
    is false); a MultiView dataset gives ``[list of view tensors, labels]``. With
    ``device_stages`` (what :func:`build_dataloader` sets up unless ``device_normalize: false``)
    the thread or workers make uint8 batches, and the main process turns them into float32
    tensors on the current device, normalised and erased there (:mod:`.device`). Call
    ``set_epoch(epoch)`` before iterating each epoch: it picks the shuffle order and the
    augmentation seed. Sample ``i`` of epoch ``e`` is the same whatever ``num_workers`` is.

    How batches are made:

    - ``num_workers: 0``: a background thread builds up to :data:`THREAD_PREFETCH` batches ahead
      (decoding and resizing release the GIL, so loading overlaps the training step).
    - ``num_workers: N``: N worker processes (forked at the first ``iter()``, numpy and PIL only)
      build whole batches, up to ``2 N`` ahead, delivered in order. Each worker stacks its
      batch straight into one of its 3 slots of anonymous shared memory (mapped before the
      fork, so nothing can outlive the processes) and sends a small header through its own
      pipe; the main process copies the arrays once, into the tensors, before the slot takes
      another batch (so no array or tensor it yields shares memory with a slot). Through a pipe
      a uint8 batch of 32 cost the main process 0.12-0.13 CPU-ms an image to receive and kept
      the worker waiting until it was read. The slots are sized from ``sample_nbytes`` (what
      :func:`build_dataloader` finds for the pipeline's fixed output size); arrays that do not
      fit, and every array without ``sample_nbytes``, take the pipe as raw bytes. The workers
      are persistent: kept for the next epoch after a complete pass (each task carries its
      epoch, so augmentation stays a function of (seed, epoch, index)); stopping early
      (``break``, an error, Ctrl-C) ends them and the next ``iter()`` starts new ones.
      :meth:`close` ends them.

    Errors: a failing sample, transform or batch ends the iteration with one DataError naming
    the sample index, its file and the transform; a worker killed by the system (e.g. out of
    memory) is a DataError too. With ``sync_errors`` (set by :func:`build_dataloader` in an
    initialised distributed run) the ranks agree on every batch with a one-integer all-reduce,
    so when one rank's data fails every rank raises the same DataError before anyone enters the
    training step's collectives (where the others would otherwise wait or crash on a dead peer).

    Evaluation across ranks -- each sample must count exactly once. With ``drop_last: false``
    the last global batch is padded with repeated samples so every rank runs the same number
    of equally shaped batches. The trainer must do this:

        for k, (images, labels) in enumerate(loader):
            n = loader.num_valid(k)   # only the first n rows of this batch are real samples
            ... accumulate metric sums over images[:n], labels[:n] ...
        ... all-reduce (sum) the metric sums and the counts over ranks ...

    With ``drop_last: false`` (the val default) the summed count then equals
    ``loader.num_samples`` (= ``len(loader.dataset)``); ``drop_last: true`` drops the samples of
    the incomplete last global batch instead of padding it. Equivalently,
    all-gathering each batch's outputs in rank order, concatenating over batches and keeping the
    first ``loader.num_samples`` rows gives every sample once, in the sampler's global order.
    """

    def __init__(self, dataset, batch_sampler: DistributedBatchSampler, num_workers: int = 0,
                 where: str = "data", sync_errors: bool = False,
                 device_stages: Optional[List[DeviceBatchStage]] = None,
                 sample_nbytes: Optional[int] = None):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = int(num_workers)
        self.batch_size = batch_sampler.batch_size
        self.global_batch_size = batch_sampler.global_batch_size
        self.num_samples = len(dataset)
        self.where = where  # names the data section in messages, e.g. 'data.val'
        self.sync_errors = bool(sync_errors)
        # Per image field of a sample (one, or one per view): the batch stage run on the device
        # (see .device); None: the dataset's arrays become tensors as they are.
        self.device_stages = device_stages
        # Bytes of one sample's images (all views), as the workers make them: sizes the
        # workers' shared-memory slots; None: batches go through the pipes.
        self.sample_nbytes = sample_nbytes
        self._pool: Optional[_WorkerPool] = None

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def num_valid(self, batch_index: int) -> int:
        """Real (not padding) rows at the start of this rank's ``batch_index``-th batch."""
        return self.batch_sampler.num_valid(batch_index)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator:
        index_batches = list(self.batch_sampler)  # this epoch's order, fixed now
        epoch = getattr(self.dataset, "epoch", None)
        if self.num_workers > 0:
            source = self._pool_batches(index_batches, epoch)
        else:
            source = self._thread_batches(index_batches)
        return self._iterate(source, index_batches, epoch)

    def _iterate(self, source, index_batches, epoch: Optional[int]):
        try:
            for indices in index_batches:
                error = None
                try:
                    batch = next(source)
                except Exception as exc:  # noqa: BLE001 - agreed on below, then re-raised
                    error = exc
                if self.sync_errors:
                    self._agree(error)
                if error is not None:
                    raise error
                yield self._to_device(batch, indices, epoch)
        finally:
            source.close()

    def _to_device(self, batch, indices, epoch: Optional[int]):
        """The batch as tensors; with device stages, the images (uint8) go through them."""
        if self.device_stages is None:
            return _to_tensors(batch)
        images, rest = batch[0], batch[1:]
        epoch = 0 if epoch is None else epoch
        if isinstance(images, list):  # multi-view: one stage per view
            images = [stage(view, indices, epoch)
                      for stage, view in zip(self.device_stages, images)]
        else:
            images = self.device_stages[0](images, indices, epoch)
        return [images] + _to_tensors(list(rest))

    def _agree(self, error: Optional[BaseException]) -> None:
        """All ranks: raise the same DataError if any rank's batch failed."""
        import paddle.distributed as dist

        flag = paddle.to_tensor([0 if error is None else 1], dtype="int32")
        dist.all_reduce(flag)
        if int(flag.item()) == 0:
            return
        messages: List[Optional[str]] = []
        dist.all_gather_object(messages, None if error is None else describe_exception(error))
        if error is not None and not isinstance(error, PasslMixerError):
            raise error  # a bug here: keep its traceback (the other ranks report it in one line)
        failed = "; ".join(f"on rank {rank} of {len(messages)}: {message}"
                           for rank, message in enumerate(messages) if message is not None)
        raise DataError(f"Data loading failed {failed}") from error

    # -- num_workers == 0 ---------------------------------------------------------------------
    def _thread_batches(self, index_batches):
        out: queue.Queue = queue.Queue(maxsize=THREAD_PREFETCH)
        stop = threading.Event()
        thread = threading.Thread(target=_produce, name=f"passl-mixer {self.where} loader",
                                  args=(self.dataset, index_batches, self.where, out, stop),
                                  daemon=True)
        thread.start()
        try:
            for _ in index_batches:
                kind, value = out.get()
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()  # the thread stops before its next sample
            thread.join(JOIN_TIMEOUT)

    # -- num_workers > 0 ----------------------------------------------------------------------
    @property
    def _workers(self) -> List[Any]:
        """The worker processes (none without a pool)."""
        return self._pool.processes if self._pool is not None else []

    def _pool_batches(self, index_batches, epoch: Optional[int]):
        if self._pool is None or self._pool.pid != os.getpid():
            self._pool = _WorkerPool(self.num_workers, self.dataset, self.where,
                                     self._slot_bytes())
        pool = self._pool
        window = PREFETCH_PER_WORKER * self.num_workers
        complete = False
        try:
            for k in range(min(window, len(index_batches))):
                pool.submit(k, epoch, index_batches[k])
            for k in range(len(index_batches)):
                batch = pool.result(k)
                if k + window < len(index_batches):
                    pool.submit(k + window, epoch, index_batches[k + window])
                complete = k == len(index_batches) - 1  # nothing left in the workers
                try:
                    yield batch  # _iterate makes the tensors before it asks for the next one
                finally:
                    del batch
                    pool.release(k)
        finally:
            if not complete:  # break, error or Ctrl-C: end the workers now
                self._shutdown_pool(kill=True)

    def _slot_bytes(self) -> int:
        """Bytes of one shared-memory slot: a whole batch; 0: no slots."""
        if not self.sample_nbytes:
            return 0
        size = self.batch_size * (int(self.sample_nbytes) + SLOT_SMALL_FIELDS)
        return -(-size // mmap.PAGESIZE) * mmap.PAGESIZE

    def _shutdown_pool(self, kill: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(kill)

    def close(self) -> None:
        """End the worker processes, if any (a later ``iter()`` starts new ones)."""
        self._shutdown_pool(kill=False)

    def __del__(self):
        try:
            self._shutdown_pool(kill=True)
        except Exception:  # noqa: BLE001 - at interpreter exit anything may be gone already
            pass


def _pipelines(dataset, split: str):
    """(config location, Compose) of each transform pipeline ``dataset`` applies."""
    views = getattr(dataset, "views", None)
    if isinstance(views, (list, tuple)) and views and all(isinstance(v, Compose) for v in views):
        return [(f"data.{split}.dataset.views[{v}]", pipeline) for v, pipeline in enumerate(views)]
    transforms = getattr(dataset, "transforms", None)
    return [(f"data.{split}.transforms", transforms)] if isinstance(transforms, Compose) else []


def _distributed(world_size: int) -> bool:
    """Whether this process is one of ``world_size`` > 1 in an initialised process group."""
    import paddle.distributed as dist

    return world_size > 1 and dist.is_initialized() and dist.get_world_size() == world_size


def build_dataloader(cfg: Dict[str, Any], train: bool, seed: int = 0,
                     world_size: Optional[int] = None, rank: Optional[int] = None) -> Loader:
    """Build the :class:`Loader` for one data section (its keys: :class:`LoaderSection`).

    ``seed`` seeds both the shuffle and the augmentation. ``world_size``/``rank`` default to
    ``paddle.distributed.get_world_size()`` / ``get_rank()``.
    """
    split = "train" if train else "val"
    cfg = validate_section(LoaderSection, cfg, f"data.{split}")
    for key in ("transforms", "seed"):
        if key in cfg["dataset"]:
            raise located(f"data.{split}.dataset must not set '{key}': the loader passes it "
                          f"(transforms from data.{split}.transforms, seed from train.seed).",
                          f"data.{split}.dataset.{key}")
    num_workers = cfg["num_workers"]
    world_size = paddle.distributed.get_world_size() if world_size is None else world_size
    rank = paddle.distributed.get_rank() if rank is None else rank

    dataset = DATASETS.build(cfg["dataset"], config_path=f"data.{split}.dataset",
                             transforms=cfg["transforms"], seed=seed)
    # A pipeline whose output size follows the input's (a short-side Resize, no crop) could
    # not batch images of different shapes: a ConfigError now, not a DataError mid-epoch.
    pipelines = _pipelines(dataset, split)
    sizes = [check_output_size(pipeline, where, allow_unchanged=True)
             for where, pipeline in pipelines]
    device_stages = None
    if cfg["device_normalize"] and hasattr(dataset, "split_for_device"):
        device_stages = [DeviceBatchStage(tail, seed, view)
                         for view, tail in enumerate(dataset.split_for_device())]
    sample_nbytes = None  # unknown (a size that follows the input's): batches take the pipes
    if pipelines and all(sizes) and hasattr(dataset, "output_dtype"):
        itemsize = np.dtype(dataset.output_dtype).itemsize  # uint8 after split_for_device
        sample_nbytes = sum(int(np.prod(size)) for size in sizes) * itemsize
    shuffle = train if cfg["shuffle"] is None else cfg["shuffle"]
    drop_last = train if cfg["drop_last"] is None else cfg["drop_last"]
    sampler = DistributedBatchSampler(len(dataset), cfg["batch_size"], num_replicas=world_size,
                                      rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return Loader(dataset, sampler, num_workers, where=f"data.{split}",
                  sync_errors=_distributed(world_size), device_stages=device_stages,
                  sample_nbytes=sample_nbytes)
