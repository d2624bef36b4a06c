"""The verdicts in words: per stage the best group and each other's verdict, the answer across
stages and what it cannot know. Reads the frames `app.analysis.stats` makes (its docstring is the
API; it re-exports every name here), so this module needs nothing but the verdict names.
"""

from __future__ import annotations

import math

import pandas as pd

from app.analysis.intervals import CANNOT_TELL, DEFAULT_MARGIN, EQUIVALENT, WITHIN_NOISE, WORSE

REPEATS_COMMAND = "-P repeats=3"
REPEATS_HINT = f"add `{REPEATS_COMMAND}` to the sweep"
SELECTION_LIMITS = (
    "What this cannot know: each stage's best was itself picked as the highest of its stage's groups on these same "
    "validation numbers, so its number is optimistic and the comparisons do not correct for how many were tried; "
    "a test accuracy, on images never used to train or select, is the unbiased number."
)


def explanation(comparison) -> str:
    """What the sentences compare, in one line (the page and the report put it above them)."""
    return (f"{comparison.statistic.label.capitalize()} per configuration: mean [95% interval] over its seeds; each other "
            "configuration of a stage against the stage's best, the difference with its 95% Welch interval; "
            f"equivalent: that interval lies within ±{comparison.margin:g}.")  # fmt: skip


def sentences(comparison) -> list[str]:
    """One sentence per stage and model: which group is best, and each other's verdict against it.

    "head: lr 1e-3 is best, 0.802 [0.777, 0.827] over 3 seeds; lr 1e-4 is worse by 0.100
    [0.077, 0.123]; lr 1e-5 is equivalent: 0.002 [-0.006, 0.009] within ±0.01; lr 1e-6 is
    undecided, within noise of it: 0.010 [-0.020, 0.040] (~40 seeds per group would decide)"."""
    table = comparison.table
    if table.empty:
        return []
    several_models = table["model"].nunique() > 1
    return [_sentence(part, several_models, comparison.margin) for _, part in table.groupby(["stage", "model"], sort=False)]


def _sentence(part: pd.DataFrame, several_models: bool, margin: float) -> str:
    stage, model = part["stage"].iloc[0] or "(no stage)", part["model"].iloc[0]
    where = f"{stage} · {model}" if several_models else stage
    best, others = part.iloc[0], part.iloc[1:]
    if len(part) > 1 and (part["n"] < 2).all():
        return f"{where}: one run each: cannot tell; {REPEATS_HINT} (highest: {best['group']}, {_number(best['mean'])})"
    head = f"{where}: {best['group']} is best, {_interval(best)}"
    if others.empty:
        return head + " (the only configuration)"
    told = [_clause(row, row["group"], margin) for _, row in others.iterrows() if row["verdict"] != CANNOT_TELL]
    untold = others[others["verdict"] == CANNOT_TELL]
    if not untold.empty:  # one clause for all of them: the same remedy
        why = "the best is one run" if best["n"] < 2 else "one run each" if len(untold) > 1 else "one run"
        told.append(f"{' / '.join(untold['group'])}: cannot tell ({why}; {REPEATS_HINT})")
    return "; ".join([head, *told])


def _interval(row) -> str:
    if row["n"] < 2:
        return f"{_number(row['mean'])} (one run)"
    return f"{_number(row['mean'])} [{_number(row['ci_low'])}, {_number(row['ci_high'])}] over {row['n']} seeds"


def _clause(row, name: str, margin: float) -> str:
    """One verdict against the best, in words: the same for a group within its stage and for a stage."""
    difference = f"{_number(row['difference'])} [{_number(row['difference_low'])}, {_number(row['difference_high'])}]"
    if row["verdict"] == WORSE:
        return f"{name} is worse by {difference}"
    if row["verdict"] == EQUIVALENT:
        return f"{name} is equivalent: {difference} within ±{margin:g}"
    if row["verdict"] == WITHIN_NOISE:
        needed = row["seeds_needed"]
        tell = ("equal means: no number of seeds would tell" if math.isinf(needed) else f"~{int(needed)} seeds per group would decide"
                if math.isfinite(needed) else "no spread to go on")  # fmt: skip
        return f"{name} is undecided, within noise of it: {difference} ({tell})"
    return f"{name}: cannot tell (one run; {REPEATS_HINT})"


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def runner_up_note(comparison) -> list[str]:
    """Per stage and model whose winner is within noise of (or cannot be told from) the runner-up: a warning line."""
    lines = []
    for _, part in comparison.table.groupby(["stage", "model"], sort=False):
        if len(part) < 2:
            continue
        best, second = part.iloc[0], part.iloc[1]
        if second["verdict"] == WITHIN_NOISE:
            lines.append(f"{best['stage']}: the winner ({best['group']}) is within noise of the runner-up ({second['group']}); do not pick between them on this evidence.")
        elif second["verdict"] == CANNOT_TELL:
            lines.append(f"{best['stage']}: the winner ({best['group']}) cannot be told from the runner-up ({second['group']}) with one run each; {REPEATS_HINT}.")
    return lines


def headline(across: pd.DataFrame) -> list[str]:
    """The answer across stages (`stages`), one sentence per model, then what it cannot know:
    "finetune lr 1e-6 wins overall, 0.850 [0.838, 0.862] over 3 seeds; full is equivalent: ...;
    head is worse by 0.100 [0.077, 0.123]". Empty when nothing was compared."""
    if across.empty:
        return []
    margin = across.attrs.get("margin", DEFAULT_MARGIN)
    several_models = across["model"].nunique() > 1
    said = []
    for model, part in across.groupby("model", sort=False):
        best = part.iloc[0]
        where = f"{model}: " if several_models else ""
        tested = f", test accuracy {_number(best['test_accuracy'])}" if math.isfinite(best["test_accuracy"]) else ""
        if len(part) == 1:
            said.append(f"{where}{best['stage']} {best['group']} is best, {_interval(best)}{tested} (one stage: nothing to compare it with)")
            continue
        clauses = [_clause(row, row["stage"], margin) for _, row in part.iloc[1:].iterrows()]
        said.append(f"{where}{best['stage']} {best['group']} wins overall, {_interval(best)}{tested}; " + "; ".join(clauses))
    return [*said, SELECTION_LIMITS]
