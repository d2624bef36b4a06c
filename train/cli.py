"""`python -m train`: one click option per TrainConfig field, generated from the dataclass.

The MLproject entry point `main` calls this with every parameter, so the dataclass is
the one place defaults and help live. Errors print as one line naming the parameter.
"""

from __future__ import annotations

import sys

import click

from train import config as config_module
from train.config import ConfigError, TrainConfig
from train.errors import TrainingError, TrainingInterrupted
from train.run.preflight import preflight
from train.run.signals import absorb_stop_signals
from train.tracking import runs as tracking
from train.tracking import store as tracking_store

_CLICK_TYPES = {"float": float, "int": int, "str": str, "bool": click.BOOL}


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def config_options(command):
    for spec in reversed(config_module.fields()):
        underscore = ["--" + spec.name] if "_" in spec.name else []  # what `mlflow run -P` passes for an undeclared param
        command = click.option(
            flag_name(spec.name),
            *underscore,
            spec.name,
            type=_CLICK_TYPES[spec.type],
            default=spec.default,
            show_default=True,
            help=spec.metadata["help"],
        )(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@config_options
def command(**values) -> None:
    """Train an image classifier and track it in MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db)."""
    config = TrainConfig(**values)
    try:
        checked = preflight(config)
        from train.run.trainer import train  # TensorFlow loads only once the input is known good

        train(config, checked)
    except ConfigError as error:
        tracking.record_failed_start(config, str(error))
        raise


def main(argv: list[str] | None = None, command: click.Command = command, prog_name: str = "python -m train") -> int:
    """Run `command`; print any user error as one line and return a non-zero status."""
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return 130
    except click.UsageError as error:
        print(f"error: {error.format_message()}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        absorb_stop_signals()  # a sweep's handlers are back in place by now: one more signal must not kill it on the way out
        print(f"error: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except Exception as error:  # a server that refuses a write or stops answering mid-way: one line, not a traceback
        refused = tracking_store.access_error(error) if hasattr(error, "error_code") else None
        failure = refused or tracking_store.store_error(error)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        return 2 if refused else 1
    return 0
