"""Pipeline definitions (wiring only) and the ways to run them: local, compile, submit, schedule."""

from pipeline.recompress import recompress
from pipeline.train_and_compress import train_and_compress

PIPELINES = {"train-and-compress": train_and_compress, "recompress": recompress}

__all__ = ["PIPELINES", "recompress", "train_and_compress"]
