"""Altair chart builders: pure functions from the analysis frames to charts."""
