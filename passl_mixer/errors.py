"""Errors that carry a message meant for the user.

Tools catch :class:`PasslMixerError` and print its message as one paragraph instead of a
traceback, so raise one of these (with the offending key, file or shape and what was
expected) whenever the cause is the user's input rather than a bug in this package.
"""


class PasslMixerError(Exception):
    """Base class: a problem in the user's input, explained in the message."""


class ConfigError(PasslMixerError, ValueError):
    """A config file, override or registry build argument is wrong."""


class RegistryError(ConfigError, KeyError):
    """A registry name is unknown or registered twice."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(PasslMixerError, ValueError):
    """A dataset root, list file or image is missing or unusable."""


class ShapeError(PasslMixerError, ValueError):
    """An input or parameter has a shape other than the one expected."""


class CheckpointError(PasslMixerError, ValueError):
    """A checkpoint or weights file cannot be read or does not fit the model."""


class WriteError(PasslMixerError, OSError):
    """A file or directory could not be written or created (disk full, file-size limit,
    read-only file system, a file where a folder must be). The message names the destination
    and the operating system's reason; the atomic writers in ``fileio`` guarantee that the
    previous file (if any) is unchanged and no temporary file is left. Also an ``OSError``, so
    code that handles I/O failures keeps handling it."""


def list_some(items, n=5):
    """The first ``n`` items and the count, for error messages about many keys."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"
