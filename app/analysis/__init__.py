"""Analysis without Streamlit or Altair: long-form frames, plotted curves, statistics, one spelling of a learning rate."""
