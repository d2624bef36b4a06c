"""`python -m train.tracking.stale`: find runs that say RUNNING but whose training process is gone.

MLflow leaves a run RUNNING forever when its process is killed with SIGKILL (or the
machine dies). A RUNNING training run (tag kind=train) is stale when its process, on this
host, no longer exists, or when it has shown no sign of life (its heartbeat tag, set every
minute while it prepares and trains, or a `loss` point) for longer than --max-silence-minutes
(other hosts). Sweep parents, lr_find and evaluate runs are never judged.
`--mark` sets them KILLED with a stop_reason tag; `--resume RUN_ID` can continue them.

A reader: it never creates or migrates a store, checks it answers in seconds, and bounds every
call (train.tracking.store), so a store that is down, hangs or is not a store is one line.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from dataclasses import dataclass

import click

from train import contract
from train.errors import TrainingError
from train.messages import first_line, redact_uri
from train.tracking.heartbeat import HEARTBEAT_SECONDS, last_sign_of_life_ms

MIN_SILENCE_MINUTES = 2 * HEARTBEAT_SECONDS / 60  # below two heartbeats, a live run would look silent


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
    history = [] if run.data.tags.get(contract.TAG_HEARTBEAT) else client.get_metric_history(run.info.run_id, contract.LOSS)
    last_ms = last_sign_of_life_ms(run, history)
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


def _silence(ctx, param, value: float) -> float:
    if not (math.isfinite(value) and value >= MIN_SILENCE_MINUTES):
        raise click.BadParameter(f"must be at least {MIN_SILENCE_MINUTES:g} minutes (live runs beat every {HEARTBEAT_SECONDS} s); got {value:g}")
    return value


@click.command()
@click.option("--experiment", "experiments", multiple=True, help="Experiment name(s) to check; default: all.")
@click.option("--max-silence-minutes", default=30.0, show_default=True, callback=_silence,
              help="For runs from other hosts: stale after this long without a heartbeat or a metric.")
@click.option("--mark", is_flag=True, help="Mark the stale runs KILLED (with a stop_reason tag).")
def command(experiments, max_silence_minutes, mark):
    """List (and optionally mark) RUNNING runs whose training process is gone."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from train.tracking import store as tracking_store

    uri = tracking_store.require_existing_store()
    tracking_store.bound_http_requests(tracking_store.READER_HTTP_LIMITS)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    try:
        found = [client.get_experiment_by_name(name) for name in experiments] if experiments else client.search_experiments()
        if None in found:
            raise click.UsageError(f"no experiment named {experiments[found.index(None)]!r}")
        stale = find_stale(client, [e.experiment_id for e in found], max_silence_minutes)
        for run in stale:
            if mark:
                mark_killed(client, run)
            click.echo(f"{run.run_id}  {run.run_name:<24}  {run.reason}{'  -> KILLED' if mark else ''}")
    except (MlflowException, OSError) as error:  # it answered the check, then failed or hung: one line
        raise TrainingError(f"tracking store {redact_uri(uri)} failed while reading runs ({first_line(error)}); try again") from None
    click.echo(f"{len(stale)} stale run(s)" + ("" if mark or not stale else "; --mark marks them KILLED"))


def main(argv: list[str] | None = None) -> int:
    """Run the command; a bad option, a missing store or one that stops answering is one line."""
    from train.cli import main as one_line_main

    return one_line_main(argv, command=command, prog_name="python -m train.tracking.stale")


if __name__ == "__main__":
    sys.exit(main())
