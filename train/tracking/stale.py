"""`python -m train.tracking.stale`: find runs that say RUNNING but whose training process is gone.

MLflow leaves a run RUNNING forever when its process is killed with SIGKILL (or the
machine dies). A RUNNING training run (tag kind=train) is stale when its process, on this
host, no longer exists, or when it has logged nothing for longer than --max-silence-minutes
(other hosts). Sweep parents, lr_find and evaluate runs are never judged.
`--mark` sets them KILLED with a stop_reason tag; `--resume RUN_ID` can continue them.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass

import click

from train import contract


@dataclass
class StaleRun:
    run_id: str
    run_name: str
    reason: str


def find_stale(client, experiment_ids: list[str], max_silence_minutes: float) -> list[StaleRun]:
    # Only training runs carry host/pid tags and log `loss` every epoch; a sweep parent, an
    # lr_find or an evaluate run logs neither, so silence says nothing about them.
    only_training = f"attributes.status = 'RUNNING' AND tags.{contract.TAG_KIND} = '{contract.KIND_TRAIN}'"
    runs = client.search_runs(experiment_ids, filter_string=only_training, max_results=5000)
    stale = []
    for run in runs:
        reason = _why_stale(client, run, max_silence_minutes)
        if reason:
            stale.append(StaleRun(run.info.run_id, run.info.run_name or "", reason))
    return stale


def _why_stale(client, run, max_silence_minutes: float) -> str | None:
    tags = run.data.tags
    if tags.get(contract.TAG_HOST) == socket.gethostname() and tags.get(contract.TAG_PID, "").isdigit():
        return None if _alive(int(tags[contract.TAG_PID])) else f"process {tags[contract.TAG_PID]} on {tags[contract.TAG_HOST]} is gone"
    history = client.get_metric_history(run.info.run_id, contract.LOSS)
    last_ms = max([run.info.start_time or 0] + [m.timestamp for m in history])
    silent_minutes = (time.time() * 1000 - last_ms) / 60000
    return f"nothing logged for {silent_minutes:.0f} minutes" if silent_minutes > max_silence_minutes else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_killed(client, stale: StaleRun) -> None:
    client.set_tag(stale.run_id, contract.TAG_STOP_REASON, f"stale: {stale.reason}")
    client.set_terminated(stale.run_id, "KILLED")


@click.command()
@click.option("--experiment", "experiments", multiple=True, help="Experiment name(s) to check; default: all.")
@click.option("--max-silence-minutes", default=30.0, show_default=True, help="For runs from other hosts: stale after this long without a metric.")
@click.option("--mark", is_flag=True, help="Mark the stale runs KILLED (with a stop_reason tag).")
def command(experiments, max_silence_minutes, mark):
    """List (and optionally mark) RUNNING runs whose training process is gone."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(contract.tracking_uri())
    client = MlflowClient()
    found = [client.get_experiment_by_name(name) for name in experiments] if experiments else client.search_experiments()
    if None in found:
        raise click.UsageError(f"no experiment named {experiments[found.index(None)]!r}")
    stale = find_stale(client, [e.experiment_id for e in found], max_silence_minutes)
    for run in stale:
        if mark:
            mark_killed(client, run)
        click.echo(f"{run.run_id}  {run.run_name:<24}  {run.reason}{'  -> KILLED' if mark else ''}")
    click.echo(f"{len(stale)} stale run(s)" + ("" if mark or not stale else "; --mark marks them KILLED"))


if __name__ == "__main__":
    sys.exit(command())
