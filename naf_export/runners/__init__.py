"""One runner per target: load an artifact and run it on (image, features) numpy batches."""
