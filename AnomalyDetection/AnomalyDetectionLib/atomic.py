"""Atomic file output: every file the engine writes appears whole or not at all.

Why one helper: detection maps, reports, figures, model files and checkpoints are all read by
other programs (Slicer, a batch script, a second ``detect``), which must never see half a file,
and a failed or cancelled write must leave nothing behind. The data goes to a temporary file in
the target folder and is renamed over the target; the temporary file gets the permissions a
plain ``open()`` would have given (``tempfile`` makes it private), so outputs are shareable.

A process killed outright (SIGKILL, power loss) cannot delete its temporary file; the file's name
carries the host and process id that wrote it, so a later run can tell a dead writer's leftover
(:func:`remove_stale_temporaries`) from a live writer's file in progress.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator, List, Union

PathLike = Union[str, "os.PathLike[str]"]
#: ``.<target name>.<host>-<pid>.<random><suffix>``: the temporary files :func:`atomic_output` makes.
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>[0-9]+)\.[A-Za-z0-9_]+\.[^/]*$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_host()}-{os.getpid()}.", suffix=suffix,
                               dir=str(target.parent))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Delete the temporary files of :func:`atomic_output` in ``folder`` whose writer is dead.

    Only files written on this host by a process that no longer exists are removed (a file of
    another host, or of a live process, may still become an output). Returns what was removed.
    """
    folder = Path(folder)
    removed: List[Path] = []
    if not folder.is_dir():
        return removed
    host = _host()
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and match.group("host") == host and not _alive(int(match.group("pid"))) and path.is_file():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
