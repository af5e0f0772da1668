"""Video data: decoding, frame-index sampling, transforms, datasets, Flux batches, synthetic data."""
