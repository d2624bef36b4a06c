"""Command-line tools beside training: the learning-rate range test and evaluation of a logged model."""
