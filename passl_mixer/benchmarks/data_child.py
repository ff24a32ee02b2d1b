"""The data benchmark's per-core rate, in a process of its own (see :mod:`.data`).

Run by its path, not as a module (``python .../data_child.py JSON``), so that its PYTHONPATH
alone decides which passl_mixer and which Pillow are measured: another checkout (the code of an
older commit, say) or another Pillow build (Pillow-SIMD installed in a directory of its own).
It uses only what every version of the data pipeline has: ``build_dataloader``, the loader's
dataset, ``set_epoch`` and ``dataset[i]``, the path a loader worker takes for each sample.

Argument: JSON ``{"loader_cfg", "seed"}`` (``loader_cfg``: the ``data.train`` section).
First reply: JSON ``{"num_samples", "pillow", "passl_mixer"}``. Each request: JSON
``[[epoch, [index, ...]], ...]``, batches of sample indices
(:func:`passl_mixer.data.timed_batches`), the first one made untimed; its reply: JSON ``{"images", "cpu_s", "wall_s"}`` over the others.
"""
import importlib.util
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def pillow_build() -> dict:
    """The Pillow this process imported: its distribution (``Pillow`` or ``Pillow-SIMD``),
    version and JPEG library."""
    from importlib import metadata

    import PIL
    from PIL import features

    site = os.path.dirname(os.path.dirname(os.path.abspath(PIL.__file__)))
    names = [d.metadata["Name"] for d in metadata.distributions(path=[site])
             if (d.metadata["Name"] or "").lower() in ("pillow", "pillow-simd")]
    turbo = features.check_feature("libjpeg_turbo")
    jpeg = f"libjpeg-turbo {features.version('libjpeg_turbo')}" if turbo else \
        f"libjpeg {features.version('jpg')}"
    name = names[0] if names else "Pillow"
    return {"name": name, "version": PIL.__version__, "simd": name.lower() == "pillow-simd",
            "jpeg": jpeg, "path": os.path.dirname(os.path.abspath(PIL.__file__))}


def _child_helpers():
    """This checkout's ``child.py`` (standard library only), loaded from its file: the package
    imported here may be another checkout's, which need not have it."""
    spec = importlib.util.spec_from_file_location("passl_mixer_benchmark_child",
                                                  os.path.join(HERE, "child.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(arg: dict) -> None:
    helpers = _child_helpers()
    replies = helpers.reply_channel()
    import passl_mixer
    from passl_mixer.data import build_dataloader

    # The dataset as the loader builds it: with its Normalize tail left to the device where
    # the version does that (a worker's samples are then uint8).
    dataset = build_dataloader(arg["loader_cfg"], train=True, seed=arg["seed"], world_size=1,
                               rank=0).dataset

    def make(batches):
        for epoch, indices in batches:
            dataset.set_epoch(epoch)
            for i in indices:
                dataset[i]

    def handle(line: str) -> str:
        batches = json.loads(line)
        make(batches[:1])  # untimed, as the loader's first batch
        wall, cpu = time.perf_counter(), time.process_time()
        make(batches[1:])
        return json.dumps({"images": sum(len(indices) for _, indices in batches[1:]),
                           "cpu_s": time.process_time() - cpu,
                           "wall_s": time.perf_counter() - wall})

    first = {"num_samples": len(dataset), "pillow": pillow_build(),
             "passl_mixer": os.path.dirname(os.path.abspath(passl_mixer.__file__))}
    helpers.answer(replies, json.dumps(first), handle)


if __name__ == "__main__":
    # Run by path, Python put this folder first on sys.path, where its modules (data.py,
    # train.py, ...) would shadow top-level ones: the caller's PYTHONPATH alone decides.
    if sys.path and os.path.abspath(sys.path[0]) == HERE:
        del sys.path[0]
    main(json.loads(sys.argv[1]))
