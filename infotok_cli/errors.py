"""The package's exception types and the one-line message helper, in one place.

Rank 0 of the package's layers (standard library only): the command line maps these classes to exit
codes without importing torch or PyAV. Each class is also importable from the module that raises it.
"""

from __future__ import annotations


def one_line(text: object) -> str:
    """Collapse whitespace, so that a message (which may embed paths and library text) is one line."""
    return " ".join(str(text).split())


class InfotokError(Exception):
    """Base of the package's user-facing errors: the message is always one line."""

    def __init__(self, message: object = ""):
        super().__init__(one_line(message))


class ContainerError(InfotokError):
    """A problem with an .itok file (or with data handed to the writer), e.g. 'checksum mismatch in window 3'."""


class OutputExistsContainerError(ContainerError, FileExistsError):
    """The output .itok file exists (or another writer created it first) and overwriting was not asked for."""


class VideoError(InfotokError):
    """A user-facing video problem; the message names the file."""


class VideoExistsError(VideoError, FileExistsError):
    """The output video exists (or another writer created it first) and overwriting was not asked for."""


class AudioError(InfotokError):
    """A problem with an audio stream or an AUDIO chunk."""


class WeightsError(InfotokError):
    """A problem with a weights file (missing, unreadable, or not the weights a file was made with)."""


class CodecError(InfotokError):
    """A problem with coding: the parameters, or a video or file that does not code consistently."""


class OptionError(CodecError, ValueError):
    """A coding option out of range or in conflict with another (a usage error)."""


class WeightsMismatchError(WeightsError, CodecError):
    """The model given is not the one a file (or tokens) was made with: its tokens only decode with those weights."""
