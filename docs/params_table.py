"""The README's parameter table, written from TrainConfig (train/config.py) and MLproject's `main`.

    python -m docs.params_table            # print the table
    python -m docs.params_table --write    # replace the table in README.md

Defaults and help text live once, in TrainConfig; this only lays them out, a row per field in
TrainConfig's order: every parameter of MLproject's `main` entry point, and `experiment`, which
only `python -m train` takes. tests/test_project_files.py checks that the README holds exactly
what this prints.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click
import yaml

from train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- parameter table: python -m docs.params_table --write -->", "<!-- end of parameter table -->"


def _default(value) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`" if value != "" else '`""`'


def main_parameters() -> list[str]:
    """MLproject's `main` parameters, in the order it declares them."""
    return list(yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["main"]["parameters"])


def table() -> str:
    rows = ["| parameter | type | default | what it does |", "|---|---|---|---|"]
    for spec in dataclasses.fields(TrainConfig):
        rows.append(f"| `{spec.name}` | {spec.type} | {_default(spec.default)} | {spec.metadata['help'].replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    before, found, rest = readme.partition(START)
    if not found or END not in rest:
        raise click.ClickException(f"README.md has no {START} ... {END} block to fill")
    return f"{before}{START}\n{table()}\n{END}{rest.split(END, 1)[1]}"


@click.command()
@click.option("--write", is_flag=True, help="Replace the table in README.md instead of printing it.")
def cli(write: bool) -> None:
    if not write:
        click.echo(table())
        return
    readme = REPO / "README.md"
    readme.write_text(readme_with_table(readme.read_text()))


if __name__ == "__main__":
    sys.exit(cli())
