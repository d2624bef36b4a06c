"""`python -m sweep`: the MLproject `sweep` entry point.

Named options pick the plan and how it runs; every other `--name value` (what `mlflow run
-P name=value` passes for a parameter the entry point does not declare) overrides that
training parameter in the plan: `a,b` is a grid axis, `low..high:log` an Optuna range,
anything else a fixed value, and `--PHASE.name` changes one phase only. Every named option
also takes the underscore spelling (`--prune_startup`): `mlflow run -P prune_startup=3` passes
a parameter the entry point does not declare as `--prune_startup 3`.
"""

from __future__ import annotations

import collections

import click

from sweep import plan as plans
from sweep import racing
from sweep.plan_values import check_quotable
from train.config import ConfigError, check_register_as
from train.errors import TrainingError
from train.messages import first_line, redact_uri, scrub


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--plan", default="", help="A plan YAML file or the name of a ready-made one in plans/ (stages, schedules, efficientnet, demo). Empty: one grid over --lrs x --stages.")
@click.option("--lrs", default="", help="Learning rates, comma-separated (a grid axis), or LOW..HIGH:log (sampled). Overrides the plan's lr.")
@click.option("--stages", default="", help="Stages, comma-separated. finetune runs after the others, from the best head run.")
@click.option("--schedules", default="", help="Schedules, comma-separated. Overrides the plan's schedule.")
@click.option("--repeats", default=0, type=click.IntRange(min=0), help="Run every configuration this many times, with seeds seed, seed+1, ... 0: the plan's (1).")
@click.option("--max-repeats", "--max_repeats", "max_repeats", default=0, type=click.IntRange(min=0), help="Racing: after each round, give both groups of every still undecided comparison (within noise, cannot tell) one more seed, up to this many. 0: the plan's (off: = repeats).")
@click.option("--margin", default="", help="Differences inside ±margin (accuracy) are 'equivalent' when their 95%% interval lies inside it. Default: the plan's (0.01).")
@click.option("--trials", default=0, type=int, help="Runs per phase when a parameter is a range (Optuna's TPE sampler). 0: the plan's (10).")
@click.option("--storage", default="", help="Database URL shared by all workers (Optuna's storage and the claims on configurations), e.g. postgresql://user:pw@host/optuna or sqlite:///sweep.db. Empty: this process only.")
@click.option("--study", default="", help="Sweep name shared by its workers. Default: <plan>-<hash of the plan>, so the same command resumes the same sweep.")
@click.option("--pruning", default="none", show_default=True, type=click.Choice(["none", "median", "halving"]), help="Stop runs whose val_accuracy falls behind the others of their phase (Optuna MedianPruner or SuccessiveHalvingPruner).")
@click.option("--prune-startup", "--prune_startup", "prune_startup", default=2, show_default=True, type=click.IntRange(min=0), help="median: runs that complete before any is pruned.")
@click.option("--prune-warmup", "--prune_warmup", "prune_warmup", default=1, show_default=True, type=click.IntRange(min=0), help="Epochs every run trains before it can be pruned.")
@click.option("--register-as", "--register_as", "register_as", default="", help="Register the best model of each stage under this name (alias = stage) and the overall best as @champion. Empty: don't register.")
@click.option("--experiment", default="", help="MLflow experiment (python -m sweep only; under mlflow run use --experiment-name).")
@click.option("--dry-run", "--dry_run", "dry_run", is_flag=True, help="Print the configurations and exit.")
@click.pass_context
def command(ctx, plan, lrs, stages, schedules, repeats, max_repeats, margin, trials, storage, study, pruning, prune_startup, prune_warmup, register_as, experiment, dry_run) -> None:
    """Run a whole experiment grid as one MLflow parent run with a child run per configuration."""
    overrides = parse_overrides(ctx.args)
    for name, value in (("lr", lrs), ("stage", stages), ("schedule", schedules)):
        if value:
            overrides[name] = value
    chosen = build_plan(plan, overrides, repeats, trials, max_repeats, margin)
    check_register_as(register_as, "register_as")  # before the first child trains, not after the last
    check_quotable(study, "study")
    if storage:
        check_storage(storage)
    print(f"sweep '{chosen.name}': {chosen.size()} configurations in {len(chosen.phases)} phase(s): "
          + ", ".join(f"{p.name} ({p.size()})" for p in chosen.phases), flush=True)
    if chosen.racing:
        print(racing.budget_line(chosen), flush=True)
    if dry_run:
        print(chosen.to_yaml())
        return
    from sweep.runner import SweepOptions, run_sweep

    result = run_sweep(SweepOptions(chosen, storage, study, pruning, prune_startup, prune_warmup, register_as, experiment))
    if result.failed:  # the summary printed what did finish; the exit status says not everything did
        raise TrainingError(failure_line(result.failures, len(result.failed) + len(result.trained)))


def failure_line(reasons: list[str], children: int) -> str:
    """'2 of 5 sweep children failed: 2x data folder ...' - each distinct reason once, most frequent first."""
    counted = collections.Counter(reasons).most_common()
    why = "; ".join(f"{count}x {reason}" if count > 1 else reason for reason, count in counted[:3])
    more = f"; and {len(counted) - 3} other reason(s)" if len(counted) > 3 else ""
    return (f"{len(reasons)} of {children} sweep children failed: {why}{more}; each child's stop_reason tag says why "
            "(launch the same sweep again to retry them)")


def build_plan(plan: str, overrides: dict[str, str], repeats: int, trials: int, max_repeats: int = 0, margin: str | float = "") -> plans.Plan:
    """The plan to run: loaded or the default grid, with the command line's overrides; every
    count and configuration checked here, before TensorFlow loads. 0 / "": the plan's."""
    if plan:
        chosen = plans.load_plan(plan)
    else:
        stages = [s.strip() for s in overrides.pop("stage", "full").split(",") if s.strip()]
        chosen = plans.default_plan(stages)  # lrs apply to every phase; -P finetune.lr=... sets its own
    plans.apply_overrides(chosen, overrides)
    repeats = repeats or chosen.repeats
    if not 1 <= repeats <= plans.MAX_CONFIGURATIONS:
        raise ConfigError(f"repeats must be from 1 to {plans.MAX_CONFIGURATIONS:,} (got {repeats})")
    if trials < 0:
        raise ConfigError(f"trials must be 0 (the plan's) or more (got {trials})")
    if margin != "":
        chosen.margin = plans.check_margin(margin, "margin")
    plans.add_repeats(chosen, repeats, max_repeats or chosen.max_repeats)
    if trials:
        for phase in chosen.phases:
            phase.trials = trials
    plans.check_configurations(chosen)
    return chosen


def parse_overrides(args: list[str]) -> dict[str, str]:
    """['--image_size', '64', '--finetune.lr=1e-6'] -> {'image_size': '64', 'finetune.lr': '1e-6'}."""
    overrides: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument '{arg}'; give overrides as --name value (or -P name=value under mlflow run)")
        name, equals, value = arg[2:].partition("=")
        if not equals:
            if index + 1 >= len(args):
                raise ConfigError(f"--{name} needs a value")
            value = args[index + 1]
            index += 1
        name = name.replace("-", "_")
        if value != "":  # an MLproject parameter left at its empty default means "the plan's value"
            overrides[name] = value
        index += 1
    return overrides


def check_storage(url: str) -> None:
    """Open the shared database now: a wrong URL is one line, before any run starts."""
    import sqlalchemy as sa

    if "://" not in url:
        raise ConfigError(f"storage '{url}' is not a database URL; use sqlite:///sweep.db or postgresql://USER:PASSWORD@HOST/DB")
    try:
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            sa.inspect(connection).get_table_names()  # reads the schema: a text file as SQLite fails here, not at connect
        engine.dispose()
    except Exception as error:  # noqa: BLE001 - any driver error: report its first line
        raise ConfigError(f"storage '{redact_uri(url)}' cannot be opened ({scrub(first_line(getattr(error, 'orig', None) or error), url)}); check the URL and that the database server runs") from None


def main(argv: list[str] | None = None) -> int:
    """Errors as one line and an exit status, as `python -m train` does."""
    from train.cli import main as train_main

    return train_main(argv, command=command, prog_name="python -m sweep")
