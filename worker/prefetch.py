"""The next optimizer step's batches, collated on a background thread while the current step trains.

Collation (reading examples from the Arrow splits, packing them, building tensors) is plain Python; the
step's forward and backward spend their time in torch kernels that release the GIL, so a second thread
collates the next step alongside. Which examples come next is known a step ahead
(``DataOrder.peek``) except across an epoch's end, where the next permutation is drawn only when it is
taken; that one step is collated when it comes. A prefetched set is used only when the step's indices
are exactly the ones it was made from, so the order of examples, and a seeded run, are what they would
be without it. One short-lived daemon thread per step: nothing to shut down when a run stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

Batch = dict[str, Any]


def in_background(work: Callable[[], Any]) -> Future:
    """``work()`` on a daemon thread; its result (or its exception) through the future."""
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as error:  # handed to whoever takes the result
            future.set_exception(error)

    threading.Thread(target=run, name="tunestudio-collate", daemon=True).start()
    return future


class Prefetcher:
    """Collates one step's micro-batches ahead with ``collate(indices)``; ``hits`` counts the steps served
    from the background."""

    def __init__(self, collate: Callable[[Sequence[int]], Batch]) -> None:
        self.collate = collate
        self.hits = 0
        self._pending: tuple[list[list[int]], Future] | None = None

    def schedule(self, upcoming: list[list[int]] | None) -> None:
        """Start collating the micro-batches of ``upcoming`` (None: the next step is not known yet)."""
        self._pending = None
        if upcoming is not None:
            self._pending = (upcoming, in_background(lambda: [self.collate(i) for i in upcoming]))

    def batches(self, indices: list[list[int]]) -> list[Batch]:
        """The micro-batches of ``indices``: the prefetched ones when they are these, else collated now."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == indices:
            self.hits += 1
            return pending[1].result()
        return [self.collate(i) for i in indices]
