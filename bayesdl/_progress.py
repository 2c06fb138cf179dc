"""Progress bars: tqdm, switched off when not on a TTY or when ``BAYESDL_PROGRESS=0``."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show a progress bar (``progress`` overrides the environment when given)."""
    if progress is not None:
        return bool(progress)
    if os.environ.get("BAYESDL_PROGRESS", "1") == "0":
        return False
    return sys.stderr.isatty()


def progress_bar(total: int, *, desc: str, progress: bool | None = None, initial: int = 0):
    """A tqdm bar over ``total`` steps, or a disabled one."""
    return tqdm(
        total=total, desc=desc, initial=initial, disable=not progress_enabled(progress), leave=False
    )
