"""The study application's errors: the ``pyred`` command prints them as one line, never a traceback."""


class StudyError(Exception):
    """Something about the study's input, files or environment that the user can fix."""


class ConfigError(StudyError, ValueError):
    """A bad study configuration, found before any work starts."""


def one_line(exc: BaseException) -> str:
    """What an error says, on one line: an OSError's file and reason; the last line of an error re-raised
    from a DataLoader worker (its message holds the worker's whole traceback)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1]
    return " ".join(text.split())
