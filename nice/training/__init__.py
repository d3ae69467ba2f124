"""Training loops: the classifier to explain, and the NICE mask generator against it."""
