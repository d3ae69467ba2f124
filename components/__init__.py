"""Kubeflow Pipelines components: thin `@dsl.component` wrappers over `nice.jobs` and
`nice.evaluate`. Imports live inside the function bodies (they run in the project image)."""

from components.compress_archive import compress_archive
from components.evaluate import evaluate
from components.finalize import finalize_tracking
from components.fingerprint import source_fingerprint
from components.ingest import ingest
from components.recompress import compress_shard, finish_recompress, plan_recompress
from components.train_classifier import train_classifier
from components.train_mask_generator import train_mask_generator

__all__ = ["compress_archive", "compress_shard", "evaluate", "finalize_tracking", "finish_recompress", "ingest",
           "plan_recompress", "source_fingerprint", "train_classifier", "train_mask_generator"]
