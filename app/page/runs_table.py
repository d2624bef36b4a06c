"""The page's runs table: every selected run, the best first, the columns that fit beside the sidebar."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.charts import builders as charts
from app.data import run_search

# The runs table: (label, width in px, format); columns in this order, the first of TABLE_PRIORITY
# that fit in TABLE_WIDTH shown (a column with one value for every run says nothing and is left
# out), the others a click away in the table's column menu. The width the curve chart fills too:
# the main area of a 1600 px page beside the sidebar, so no column hides behind a sideways scroll.
TABLE_WIDTH = charts.FULL_WIDTH
TABLE_COLUMNS = {
    "run": ("run", 230, None), "lr": ("lr", 62, None), "stage": ("stage", 74, None), "model": ("model", 110, None),
    "schedule": ("schedule", 90, None), "seed": ("seed", 50, None), "state": ("state", 86, None),
    "best_val_accuracy": ("best val acc", 92, "%.4f"), "best_epoch": ("best epoch", 84, "%d"),
    "final_accuracy": ("final train acc", 110, "%.4f"), "final_val_accuracy": ("final val acc", 98, "%.4f"),
    "final_loss": ("final train loss", 112, "%.4f"), "final_val_loss": ("final val loss", 100, "%.4f"), "gap": ("gap", 64, "%.4f"),
    "epochs": ("epochs", 62, "%d"), "duration_s": ("duration (s)", 92, "%.0f"), "images_per_second": ("images/s", 76, "%.0f"),
    "last_activity": ("last activity", 132, None), "stop_reason": ("stop reason", 220, None), "experiment": ("experiment", 110, None),
    "url": ("MLflow", 80, None),
}  # fmt: skip
TABLE_PRIORITY = [
    "run", "best_val_accuracy", "lr", "stage", "best_epoch", "schedule", "model", "gap", "final_val_accuracy", "seed",
    "state", "final_val_loss", "url", "epochs", "duration_s", "images_per_second", "last_activity", "final_accuracy",
    "final_loss", "stop_reason", "experiment",
]  # fmt: skip
ALWAYS_SHOWN = {"run", "best_val_accuracy", "lr", "best_epoch", "url"}


def table_columns(table: pd.DataFrame) -> list[str]:
    """The columns the runs table shows, in `TABLE_COLUMNS` order (see there)."""
    shown, width = set(), 0
    for name in TABLE_PRIORITY:
        constant = name not in ALWAYS_SHOWN and table[name].astype(str).nunique() <= 1
        if not constant and width + TABLE_COLUMNS[name][1] <= TABLE_WIDTH:
            shown.add(name)
            width += TABLE_COLUMNS[name][1]
    return [name for name in TABLE_COLUMNS if name in shown]


def show(summary: pd.DataFrame) -> None:
    """Every selected run, the best first; run names in the table's normal text colour (not pinned:
    a pinned column is drawn grey, as if disabled), the rate spelled as everywhere (`1e-5`)."""
    if summary.empty:
        st.info("No training runs selected.")
        return
    table = summary.drop(columns=["run_id"]).sort_values("best_val_accuracy", ascending=False, na_position="last", kind="stable")
    table["lr"] = table["lr"].map(run_search.format_lr)
    config = {}
    for name, (label, width, number) in TABLE_COLUMNS.items():
        if name == "url":
            config[name] = st.column_config.LinkColumn(label, display_text="open run", width=width)
        elif name == "last_activity":
            config[name] = st.column_config.DatetimeColumn(label, format="YYYY-MM-DD HH:mm", width=width)
        elif number:
            config[name] = st.column_config.NumberColumn(label, format=number, width=width, help="Train minus validation accuracy at the best epoch." if name == "gap" else None)
        else:
            config[name] = st.column_config.TextColumn(label, width=width)
    config["best_epoch"]["help"] = "Counted from 0 at the run's own first epoch (on a joined curve: the tooltip's “epoch of its run”)."
    st.dataframe(table, hide_index=True, width="stretch", column_order=table_columns(table), column_config=config)
