"""The study application's errors: the ``pyred`` command prints them as one line, never a traceback."""


class StudyError(Exception):
    """Something about the study's input, files or environment that the user can fix."""


class ConfigError(StudyError, ValueError):
    """A bad study configuration, found before any work starts."""
