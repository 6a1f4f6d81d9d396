"""A tqdm progress bar when asked for and installed; the bare iterable otherwise."""

from __future__ import annotations


class _Silent:
    def __init__(self, iterable):
        self._it = iterable

    def __iter__(self):
        return iter(self._it)

    def set_postfix(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(iterable, enabled: bool, **kwargs):
    """tqdm(iterable, **kwargs) when enabled and installed; else a silent stand-in
    with the same iteration, ``update``, ``set_postfix`` and ``close``."""
    if not enabled:
        return _Silent(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Silent(iterable)
    return tqdm(iterable, **kwargs)
