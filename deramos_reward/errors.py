"""Exceptions for problems with what the user gave: files, manifests, checkpoints, configs, extras.

``InputError`` is raised by the library's input checks (audio files, rating manifests and
MusicEval folders, checkpoints, model and training configs). It is a ``ValueError``, so code that
catches ``ValueError`` keeps working; ``InputTypeError`` is also a ``TypeError``. The ``deramos``
command reports these (and ``MissingExtraError``) as one line with exit status 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """A user-supplied input is wrong; the message names it and says what was expected."""


class InputTypeError(InputError, TypeError):
    """A user-supplied input has the wrong type (an ``InputError`` and a ``TypeError``)."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


class AudioInputWarning(UserWarning):
    """Audio that is scored, but probably not as the user meant: a truncated file, or float samples
    far beyond full scale (integer PCM stored as float)."""
