"""Which of the engine's Python requirements an environment lacks, by version, without importing them.

Why: Slicer does not ship PyTorch or MONAI, and a Slicer may already hold an older torch that
another extension installed. The module's first-use install reads its requirements file
(``AnomalyDetection/Resources/requirements.txt``, minimum versions) and asks this module what is
missing *or too old*, from the installed packages' metadata: nothing is imported, so the check
works before torch exists and does not load a torch it would then have to replace. A package
that is already imported in this process and must be upgraded needs an application restart,
which :attr:`Unmet.needs_restart` tells.

Plain Python (``importlib.metadata``; ``packaging`` where present, else a small parser for the
``name>=version`` lines the requirements file uses).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

__all__ = ["Unmet", "minimum_version", "read_requirements", "unmet_requirements"]

#: Distribution name -> the module it is imported as, where they differ.
IMPORT_NAMES = {"scikit-learn": "sklearn", "SimpleITK": "SimpleITK"}
_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.+-]*))?\s*$")


@dataclass(frozen=True)
class Unmet:
    """A requirement the environment does not satisfy."""

    requirement: str
    #: The installed version, or None when the package is not installed at all.
    installed: Optional[str]

    @property
    def name(self) -> str:
        return _parse(self.requirement)[0]

    @property
    def needs_restart(self) -> bool:
        """Whether an upgrade takes effect only after restarting Python (the old one is imported)."""
        module = IMPORT_NAMES.get(self.name, self.name.replace("-", "_"))
        return self.installed is not None and module in sys.modules

    def describe(self) -> str:
        return f"{self.requirement} ({f'installed: {self.installed}' if self.installed else 'missing'})"


def read_requirements(path: Union[str, os.PathLike[str]]) -> List[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            _parse(line)  # a line this module cannot check is an error now, not a silent pass later
            lines.append(line)
    return lines


def minimum_version(requirement: str) -> Optional[str]:
    """The ``>=`` version of a requirement line (None: any version)."""
    return _parse(requirement)[1]


def unmet_requirements(requirements: Sequence[str]) -> List[Unmet]:
    """The requirements that are not installed, or installed below their minimum version."""
    unmet = []
    for requirement in requirements:
        name, minimum = _parse(requirement)
        try:
            installed: Optional[str] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or (minimum is not None and not _at_least(installed, minimum)):
            unmet.append(Unmet(requirement, installed))
    return unmet


def _parse(requirement: str) -> Tuple[str, Optional[str]]:
    match = _LINE.match(requirement)
    if match is None:
        raise ValueError(f"requirement {requirement!r} is not 'name' or 'name>=version'")
    return match.group(1), match.group(2)


def _at_least(installed: str, minimum: str) -> bool:
    """``installed >= minimum`` by ``packaging``'s rules where available, else by the leading numbers."""
    try:
        from packaging.version import Version

        return Version(installed) >= Version(minimum)
    except Exception:  # no packaging, or a version it rejects
        return _numbers(installed) >= _numbers(minimum)


def _numbers(version: str) -> Tuple[int, ...]:
    numbers = []
    for part in version.split("+")[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)
