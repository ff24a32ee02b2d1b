"""The file names of an export directory, shared by the writer and the reader.

:mod:`passl_mixer.export` writes ``DIR/{PREFIX}.json|.pdmodel + {PREFIX}.pdiparams`` (and
``{PREFIX}.onnx``) and, last, ``DIR/{INFO_FILE}``; :mod:`passl_mixer.inference` reads
``INFO_FILE`` and finds the program through it. Here, below both, so that inference does not
import the export code.
"""
INFO_FILE = "inference.yml"
PREFIX = "inference"  # file stem of the program and parameters
