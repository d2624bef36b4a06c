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


def answer(built: views.Views) -> None:
    """Per stage (and model) one sentence: the best group with its interval, each other's verdict."""
    comparison = built.comparison(chosen_statistic())
    said = stats.sentences(comparison)
    if said:
        st.markdown("**Is the difference real?** " + report.markdown_text(stats.explanation(comparison)))
        st.markdown("  \n".join(_with_code(report.markdown_text(sentence)) for sentence in said))
    for note in comparison.notes:
        st.caption(report.markdown_text(note))
    compared = int(comparison.table["verdict"].isin([stats.WORSE, stats.WITHIN_NOISE]).sum()) if not comparison.table.empty else 0
    if compared >= MANY_COMPARISONS:
        st.caption(
            f"{compared} comparisons at once: even where nothing differs, about {compared * (1 - stats.CONFIDENCE):.1f} of them "
            "would come out “worse” by chance. Confirm a surprising verdict with more seeds."
        )


def _with_code(escaped: str) -> str:
    """An escaped sentence with the command in its hint (our own text, not the runs') set as code."""
    hint = stats.REPEATS_COMMAND
    return escaped.replace(report.markdown_text(f"`{hint}`"), f"`{hint}`")


def groups_table(built: views.Views) -> None:
    """Every group of repeats: n, mean, std, interval, verdict and difference against its stage's best."""
    comparison = built.comparison(chosen_statistic())
    if comparison.table.empty:
        st.info("No finished run has a value to compare yet." + (" " + " ".join(comparison.notes) if comparison.notes else ""))
        return
    table = comparison.table.copy()
    table["lr"] = table["lr"].map(lambda v: stats.lr_text(v) if pd.notna(v) else "")
    number = "%.4f"
    st.caption(report.markdown_text(f"Compared: {comparison.statistic.label}. difference = how far a group falls short of its stage's best (positive = worse)."))
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "n": st.column_config.NumberColumn("n", format="%d", help="Finished runs in the group (its seeds)."),
            "mean": st.column_config.NumberColumn("mean", format=number),
            "std": st.column_config.NumberColumn("std", format=number),
            "ci_low": st.column_config.NumberColumn("95% CI low", format=number, help="Student-t interval of the mean."),
            "ci_high": st.column_config.NumberColumn("95% CI high", format=number),
            "difference": st.column_config.NumberColumn("difference", format=number),
            "difference_low": st.column_config.NumberColumn("difference low", format=number, help="95% Welch interval of the difference."),
            "difference_high": st.column_config.NumberColumn("difference high", format=number),
            "seeds_needed": st.column_config.NumberColumn("seeds needed", format="%.0f", help="Seeds per group to tell a difference of this size at this spread (normal approximation, 80% power)."),
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
