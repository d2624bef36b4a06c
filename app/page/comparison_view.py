"""The page's answer to "is the difference real?": per stage the best group of repeats and each
other group's verdict against it, in words above the chart; the Groups table (n, mean, interval,
verdict); the LR-sensitivity view with its 95%-interval (or min–max) bars and n.

The numbers come from `Views.comparison` (app/analysis/stats.py); this module only lays them out.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import report
from app.analysis import frames, stats
from app.charts import forest
from app.page import views

STATISTIC_KEY, BAND_KEY, MARGIN_KEY = "stat", "sband", "margin"  # session-state keys, kept in the URL (app/page/url_state.py)
BANDS = [frames.CI95, frames.MINMAX]
MANY_COMPARISONS = 10  # from here on the page says how many "worse" verdicts chance alone would give


def chosen_statistic() -> str:
    """The compared statistic's key; a URL value that is none of them gives the default."""
    state = st.session_state
    if state.get(STATISTIC_KEY) not in stats.STATISTICS:
        state[STATISTIC_KEY] = stats.BEST_VAL_ACCURACY.name
    return state[STATISTIC_KEY]


def statistic_selector() -> None:
    """The sidebar's choice of what groups are compared on."""
    chosen_statistic()
    st.selectbox(
        "Compare groups by", list(stats.STATISTICS), key=STATISTIC_KEY, format_func=lambda name: stats.STATISTICS[name].label,
        help="Each run's number the verdicts above the chart compare: groups of repeats (all params equal but the seed) per stage.",
    )  # fmt: skip
    st.number_input(
        "Equivalence margin", min_value=0.0, max_value=0.5, step=0.005, format="%.3f", key=MARGIN_KEY,
        help="A group whose whole 95% interval of the difference to its stage's best lies within ± this is “equivalent”: as good, for any practical purpose.",
    )  # fmt: skip


def chosen_margin() -> float:
    """The equivalence margin of the verdicts (the sidebar's, kept in the URL; checked there)."""
    state = st.session_state
    margin = state.get(MARGIN_KEY)
    if not isinstance(margin, (int, float)) or not 0 <= margin <= 0.5:
        state[MARGIN_KEY] = stats.DEFAULT_MARGIN
    return float(state[MARGIN_KEY])


def comparison_of(built: views.Views) -> stats.Comparison:
    """The comparison the page shows: the chosen statistic and margin."""
    return built.comparison(chosen_statistic(), chosen_margin())


def answer(built: views.Views) -> None:
    """The answer first: one line per model with the winner across stages, the forest plot of every
    stage's groups, and the same in sentences a click away."""
    comparison = comparison_of(built)
    if comparison.table.empty:
        for note in comparison.notes:
            st.caption(report.markdown_text(note))
        return
    across = stats.stages(comparison)
    for line in winner_lines(across, comparison.statistic):
        st.markdown(line)
    spec = built.forest_spec(chosen_statistic(), chosen_margin())
    if spec is not None:
        st.vega_lite_chart(spec, theme=None, width="content")
    _, left_out = forest.forest_frame(comparison.table)
    legend = (
        f"Each stage's groups of repeats (one configuration, its seeds): dot = mean {comparison.statistic.label}, line = 95% interval, "
        f"◆ = the stage's best, grey band = ±{comparison.margin:g} around it (inside: “≈ best”, equivalent), colour = learning rate."
    )
    st.caption(legend + (f" {left_out} more group(s) in the Groups view." if left_out else ""))
    with st.expander("In words: is the difference real?"):
        st.markdown(report.markdown_text(stats.explanation(comparison)))
        said = [*stats.headline(across), *stats.sentences(comparison)]
        st.markdown("  \n".join(_with_code(report.markdown_text(sentence)) for sentence in said))
        for note in comparison.notes:
            st.caption(report.markdown_text(note))
        compared = int(comparison.table["verdict"].isin([stats.WORSE, stats.WITHIN_NOISE]).sum())
        if compared >= MANY_COMPARISONS:
            st.caption(
                f"{compared} comparisons at once: even where nothing differs, about {compared * (1 - stats.CONFIDENCE):.1f} of them "
                "would come out “worse” by chance. Confirm a surprising verdict with more seeds."
            )


def winner_lines(across: pd.DataFrame, statistic: stats.Statistic) -> list[str]:
    """One Markdown line per model: the best stage's best group, then each other stage's verdict in a word."""
    lines = []
    several_models = across["model"].nunique() > 1
    for model, part in across.groupby("model", sort=False):
        best = part.iloc[0]
        where = f" ({report.markdown_text(model)})" if several_models else ""
        seeds = f"over {int(best['n'])} seeds" if best["n"] >= 2 else "one run"
        interval = f" [{best['ci_low']:.3f}, {best['ci_high']:.3f}]" if best["n"] >= 2 else ""
        head = f"**Best{where}: {report.markdown_text(best['stage'])} · {report.markdown_text(best['group'])}**, {statistic.label} {best['mean']:.3f}{interval} {seeds}"
        others = [f"{report.markdown_text(row['stage'])} {_verdict_words(row)}" for _, row in part.iloc[1:].iterrows()]
        lines.append(head + (". Other stages' best: " + "; ".join(others) + "." if others else "."))
    return lines


def _verdict_words(row) -> str:
    verdict = row["verdict"]
    if verdict == stats.WORSE:
        return f"worse by {row['difference']:.3f}"
    if verdict == stats.EQUIVALENT:
        return "equivalent"
    if verdict == stats.WITHIN_NOISE:
        return f"undecided ({row['difference']:.3f} short, within noise)"
    return f"cannot tell ({row['difference']:.3f} short, one run)"


def _with_code(escaped: str) -> str:
    """An escaped sentence with the command in its hint (our own text, not the runs') set as code."""
    hint = stats.REPEATS_COMMAND
    return escaped.replace(report.markdown_text(f"`{hint}`"), f"`{hint}`")


# The Groups table: what answers first (which group, its verdict, by how much), the rest after.
GROUP_COLUMNS_FIRST = ["stage", "group", "verdict", "n", "mean", "ci_low", "ci_high", "difference", "difference_low", "difference_high", "seeds_needed"]


GROUP_NUMBERS = {
    "n": "{:.0f}", "mean": "{:.4f}", "std": "{:.4f}", "ci_low": "{:.4f}", "ci_high": "{:.4f}", "difference": "{:.4f}",
    "difference_low": "{:.4f}", "difference_high": "{:.4f}", "seeds_needed": "{:.0f}", "test_accuracy": "{:.4f}",
}  # fmt: skip


def groups_table(built: views.Views) -> None:
    """Every group of repeats: verdict, n, mean, interval and difference against its stage's best."""
    comparison = comparison_of(built)
    if comparison.table.empty:
        st.info(
            "No finished run has a value to compare yet: groups need finished runs, and verdicts need repeats "
            f"(`python -m sweep --plan stages {stats.REPEATS_COMMAND}`)." + (" " + " ".join(comparison.notes) if comparison.notes else "")
        )
        return
    table = comparison.table.copy()
    table["lr"] = table["lr"].map(lambda v: stats.lr_text(v) if pd.notna(v) else "")
    table["verdict"] = table["verdict"].map(lambda v: v.replace("_", " "))
    text = [c for c in table.columns if table[c].dtype == object]
    table[text] = table[text].fillna("")  # blank, not "None"
    order = [c for c in GROUP_COLUMNS_FIRST if c in table] + [c for c in table.columns if c not in GROUP_COLUMNS_FIRST and table[c].astype(str).nunique() > 1]
    st.caption(report.markdown_text(f"Compared: {comparison.statistic.label}. difference = how far a group falls short of its stage's best (positive = worse)."))
    # Numbers formatted by a Styler, whose empty cells stay blank (a number column draws "None").
    numbers = [c for c in table.columns if c in GROUP_NUMBERS]
    styled = table.style.format({c: GROUP_NUMBERS[c] for c in numbers}, na_rep="")
    st.dataframe(
        styled,
        hide_index=True,
        width="stretch",
        column_order=order,
        column_config={
            "stage": st.column_config.TextColumn("stage", width=70),
            "group": st.column_config.TextColumn("group", width=190, help="The params that differ between the groups."),
            "verdict": st.column_config.TextColumn("verdict", width=95),
            "n": st.column_config.Column("n", width=40, help="Finished runs in the group (its seeds)."),
            "mean": st.column_config.Column("mean", width=70),
            "ci_low": st.column_config.Column("95% CI low", width=85, help="Student-t interval of the mean."),
            "ci_high": st.column_config.Column("95% CI high", width=85),
            "difference": st.column_config.Column("difference", width=80),
            "difference_low": st.column_config.Column("diff. low", width=75, help="95% Welch interval of the difference."),
            "difference_high": st.column_config.Column("diff. high", width=75),
            "seeds_needed": st.column_config.Column("seeds needed", width=95, help="Seeds per group that would decide an undecided verdict (normal approximation, 80% power)."),
        },
    )  # fmt: skip


def sensitivity(built: views.Views) -> None:
    """Best val accuracy and gap against lr, bars = the 95% interval of the mean or min–max, n beside each point."""
    state = st.session_state
    if state.get(BAND_KEY) not in BANDS:
        state[BAND_KEY] = frames.CI95
    band = st.radio("Error bars", BANDS, key=BAND_KEY, horizontal=True, help="95% CI: Student-t interval of the mean over repeats (none for a single run).")
    spec = built.page_spec("sensitivity" if band == frames.CI95 else "sensitivity_minmax")
    if spec is None:
        st.info("No finished run has a best validation accuracy yet.")
    else:
        st.vega_lite_chart(spec, theme=None, width="content")
