"""The file names of an export directory, shared by the writer and the reader.

:mod:`passl_mixer.export` writes ``DIR/{PREFIX}.json|.pdmodel + {PREFIX}.pdiparams`` (and
``{PREFIX}.onnx``) and, last, ``DIR/{INFO_FILE}``; :mod:`passl_mixer.inference` reads
``INFO_FILE`` and finds the program through it. Here, below both, so that inference does not
import the export code.
"""
import os

from .errors import PasslMixerError

INFO_FILE = "inference.yml"
PREFIX = "inference"  # file stem of the program and parameters


def program_file(directory: str, prefix: str = PREFIX) -> str:
    """The program file paddle.jit.save wrote: .json (PIR, Paddle 3.x) or .pdmodel (2.x)."""
    for ext in (".json", ".pdmodel"):
        if os.path.isfile(os.path.join(directory, prefix + ext)):
            return prefix + ext
    raise PasslMixerError(f"paddle.jit.save wrote neither {prefix}.json nor {prefix}.pdmodel "
                          f"into '{directory}' (it holds {sorted(os.listdir(directory))}).")
