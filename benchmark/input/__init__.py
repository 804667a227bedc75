"""Input: decoding, the uint8 image cache, tf.data and the PyDataset, preparing a run's data."""
