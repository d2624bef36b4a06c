"""Whole experiments in one command: plans of grids, run as MLflow parent + child runs on Optuna."""
