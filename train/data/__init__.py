"""Images in: scanning a folder, decoding, the prepared-image cache, tf.data pipelines, the demo set."""
