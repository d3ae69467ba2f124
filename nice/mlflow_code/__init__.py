"""Models-from-code entry points: MLflow copies one of these files into the logged model and
runs it at load time, so loading never unpickles Python objects."""
