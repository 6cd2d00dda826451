"""Atomic file output: every file the engine writes appears whole or not at all.

Why one helper: detection maps, reports, figures, model files and checkpoints are all read by
other programs (Slicer, a batch script, a second ``detect``), which must never see half a file,
and a failed or cancelled write must leave nothing behind. The data goes to a temporary file in
the target folder and is renamed over the target; the temporary file gets the permissions a
plain ``open()`` would have given (``tempfile`` makes it private), so outputs are shareable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _default_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, "w")`` would create a file with."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    ``suffix`` matters to writers that choose the format from the file name (SimpleITK, matplotlib).
    The parent folder is created if missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=str(target.parent))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
