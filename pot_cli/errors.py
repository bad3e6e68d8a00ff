"""The one exception family of ``pot``.

Every error a user can cause is a :class:`PotError`. Its class-level ``exit_code`` is the
process exit code the CLI returns (Click's convention): usage and configuration errors exit 2,
runtime failures exit 1. The message follows ``<file>: <key.path>: <problem>; expected <allowed>``
where those parts apply. ``cli.py`` is the only place that catches these.
"""
from __future__ import annotations


class PotError(Exception):
    """Base of all user-facing errors.

    :param message: one line naming the file, key or layer and what was expected.
    :param hint: optional second sentence (for example a did-you-mean suggestion).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format_message(self) -> str:
        """Return the message and the hint, if any, as shown to the user."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(PotError):
    """Wrong command-line flags or combination of flags (exit code 2)."""

    exit_code = 2


class ConfigError(PotError):
    """Invalid configuration file or value (exit code 2).

    May carry several problems at once: ``problems`` lists one line each, and the message
    joins them.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, problems: list[str] | None = None):
        super().__init__(message, hint)
        self.problems = problems or [message]


class NotSupportedError(PotError):
    """A valid request for a feature that is not built yet (exit code 2)."""

    exit_code = 2


class ModelError(PotError):
    """The model cannot be read, compiled or transformed (exit code 1)."""

    exit_code = 1


class DatasetError(PotError):
    """The calibration data cannot be read or does not fit the model (exit code 1)."""

    exit_code = 1


class EngineError(PotError):
    """Inference failed on the OpenVINO runtime (exit code 1)."""

    exit_code = 1


class OutputError(PotError):
    """The output cannot be written (exit code 1)."""

    exit_code = 1


def runtime_error_text(error: BaseException) -> str:
    """The useful part of a third-party (OpenVINO) exception text, on one line.

    OpenVINO messages start with source locations (``Exception from src/...cpp:84:``,
    ``Check '...' failed at src/...:``) and span several lines; those lines are dropped and the
    rest is joined with spaces. Falls back to the exception's type name.

    :param error: the exception to describe.
    :return: one line, for example ``"Incorrect weights in bin file!"``.
    """
    lines = [ln.strip() for ln in str(error).splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith("Exception from ")
              and not (ln.startswith("Check '") and " failed at " in ln)]
    text = " ".join(useful) or " ".join(ln for ln in lines if ln)
    return text or type(error).__name__
