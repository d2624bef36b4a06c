"""Training for learning-rate and stage experiments on Keras image classifiers."""
