"""Progress reporting and cancellation shared by detect, train and evaluate.

Long calls accept ``progress(fraction, message)`` and ``cancel() -> bool`` callables: the command
line plugs tqdm into them, the Slicer module its progress bar and Cancel button.
"""

from __future__ import annotations

from typing import Callable, Optional

from .errors import Cancelled

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


class Progress:
    """Maps the steps of one call onto ``[start, end]`` of the caller's progress range."""

    def __init__(
        self,
        callback: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        start: float = 0.0,
        end: float = 1.0,
    ) -> None:
        self.callback = callback
        self.cancel = cancel
        self.start = start
        self.end = end

    def report(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1) of this range done; raise :class:`Cancelled` if asked to stop."""
        self.check_cancel()
        if self.callback is not None:
            fraction = min(max(fraction, 0.0), 1.0)
            self.callback(self.start + (self.end - self.start) * fraction, message)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled by the user")

    def as_callback(self) -> ProgressCallback:
        """This range as a plain ``progress(fraction, message)`` callable, for a nested public call."""
        return self.report

    def sub(self, start: float, end: float) -> Progress:
        """A sub-range ``[start, end]`` (fractions of this range) for a nested step."""
        width = self.end - self.start
        return Progress(self.callback, self.cancel, self.start + width * start, self.start + width * end)
