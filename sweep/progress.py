"""The sweep's progress line: n of N done, failures, pruned runs, and an ETA."""

from __future__ import annotations

import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _describe(values: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items() if k in ("stage", "lr", "schedule", "decay", "seed", "model"))


class Progress:
    def __init__(self, total: int):
        self.total = total
        self.finished = 0  # trained, failed or skipped: the n of "n of N"
        self.counts = {"trained": 0, "failed": 0, "skipped": 0, "pruned": 0}
        self.seconds: list[float] = []
        self.started = time.monotonic()

    def done(self, phase: str, values: dict, best: float, seconds: float, pruned: int | None = None) -> None:
        self.counts["trained"] += 1
        self.counts["pruned"] += pruned is not None
        self.seconds.append(seconds)
        note = f"pruned after epoch {pruned}" if pruned is not None else f"best val_accuracy {best:.4f}"
        self._line(f"{phase}: {_describe(values)}: {note} in {_duration(seconds)}")

    def failed(self, phase: str, values: dict, error: Exception, seconds: float) -> None:
        self.counts["failed"] += 1
        self.seconds.append(seconds)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self._line(f"{phase}: {_describe(values)}: FAILED ({first}); going on")

    def skipped(self, phase: str, why: str, count: bool = True) -> None:
        """A configuration finished earlier (count) or taken by another worker (not this worker's)."""
        if count:
            self.counts["skipped"] += 1
            self._line(f"{phase}: skipped a configuration ({why})")
        else:
            self.total -= 1  # another worker's: not part of this worker's n of N

    def _line(self, what: str) -> None:
        self.finished += 1
        print(f"sweep [{self.finished}/{self.total}] {what}; {self.eta()}", flush=True)

    def eta(self) -> str:
        left = max(self.total - self.finished, 0)
        if not left:
            return "done"
        if not self.seconds:
            return f"{left} to go"
        return f"{left} to go, ETA {_duration(left * sum(self.seconds) / len(self.seconds))}"

    def final_line(self) -> str:
        c = self.counts
        return (f"sweep finished in {_duration(time.monotonic() - self.started)}: {c['trained']} trained "
                f"({c['pruned']} pruned), {c['failed']} failed, {c['skipped']} skipped as finished earlier")
