"""The sweep's progress line: n of N done, failures, pruned runs, and an ETA; and its closing
ranking: per stage the groups of repeats with intervals and verdicts (app/analysis/stats.py)."""

from __future__ import annotations

import math
import time

from sweep.filters import quoted
from train import contract
from train.messages import first_line


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, total: int):
        self.total = total
        self.finished = 0  # trained, failed or skipped: the n of "n of N"
        self.counts = {"trained": 0, "failed": 0, "skipped": 0, "pruned": 0, "lost": 0}
        self.seconds: list[float] = []
        self.started = time.monotonic()

    def done(self, label: str, best: float, seconds: float, pruned: int | None = None) -> None:
        """A run of the sweep finished; `label` names it as its run is named (`Phase.label`)."""
        self.counts["trained"] += 1
        self.counts["pruned"] += pruned is not None
        self.seconds.append(seconds)
        note = f"pruned after epoch {pruned}" if pruned is not None else f"best val_accuracy {best:.4f}"
        self._line(f"{label}: {note} in {_duration(seconds)}")

    def failed(self, label: str, error: Exception, seconds: float) -> None:
        self.counts["failed"] += 1
        self.seconds.append(seconds)
        self._line(f"{label}: FAILED ({first_line(error)}); going on")

    def lost(self, label: str, seconds: float) -> None:
        """Another worker took this child's claim over: it stopped, and that worker's run counts."""
        self.counts["lost"] += 1
        self.seconds.append(seconds)
        self._line(f"{label}: STOPPED (its claim went to another worker, which trains it); going on")

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
                f"({c['pruned']} pruned), {c['failed']} failed, {c['skipped']} skipped as finished earlier"
                + (f", {c['lost']} stopped as another worker took their claim" if c["lost"] else ""))


def print_ranking(study: str, experiment_ids: list[str], margin: float = contract.DEFAULT_MARGIN) -> None:
    """The closing summary of the sweep `study`: every training child (all workers'), per stage, then across stages."""
    import mlflow

    children = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string=f"tags.{contract.TAG_SWEEP_STUDY} = {quoted(study)} AND tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'",
        output_format="list",
    )
    for line in ranking_lines(children, margin):
        print(line, flush=True)


def ranking_lines(runs, margin: float = contract.DEFAULT_MARGIN) -> list[str]:
    """The closing summary of a sweep's training runs (MLflow `Run`s): per stage and model the groups
    of repeats, best first, each with n, mean [95% interval] of best validation accuracy and its
    verdict against the stage's best; then a warning wherever the winner is undecided against the
    runner-up, what was left out, and the answer across stages (the headline, app/analysis/stats.py)."""
    from app.analysis import stats  # numpy, scipy and pandas only: no dashboard
    from sweep import best

    if not runs:
        return []
    comparison = best.compare(runs, margin)
    lines = [f"sweep ranking by {comparison.statistic.label}: mean [95% interval] over seeds; verdict against the stage's best "
             f"(95% Welch interval; equivalent: inside ±{margin:g})"]  # fmt: skip
    width = max((len(group) for group in comparison.table["group"]), default=0)
    for index, row in comparison.table.iterrows():
        tested = comparison.details.loc[index, "test_accuracy"]
        test = f"  test {tested:.4f}" if math.isfinite(tested) else ""
        lines.append(f"  {row['stage'] or '-':<8} {row['group']:<{width}}  n={row['n']:<2} {_interval(row)}  {_verdict(row)}{test}")
    lines += [f"sweep: {line}" for line in stats.runner_up_note(comparison)]
    lines += [f"sweep: {note}" for note in comparison.notes]
    across = stats.stages(comparison)
    if across["stage"].nunique() > 1:
        lines.append("sweep across stages (each stage's best against the best stage):")
        lines += [f"  {row['stage']:<8} {row['group']}  n={row['n']:<2} {_interval(row)}  {_verdict(row)}" for _, row in across.iterrows()]
    lines += [f"sweep: {line}" for line in stats.headline(across)]
    return lines


def _interval(row: dict) -> str:
    if row["n"] < 2:
        return f"{row['mean']:.4f} (one run)        "
    return f"{row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"


def _verdict(row: dict) -> str:
    if row["verdict"] in ("best", "cannot_tell") or not math.isfinite(row["difference_low"]):
        return row["verdict"]
    return f"{row['verdict']}: {row['difference']:.4f} lower [{row['difference_low']:.4f}, {row['difference_high']:.4f}]"
