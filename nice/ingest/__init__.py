"""Dataset ingestion: sources -> validated, split, versioned Dataset artifact (Parquet shards)."""

from nice.ingest.artifact import DatasetArtifact, ShardDataset
from nice.ingest.build import IngestOptions, ingest

__all__ = ["DatasetArtifact", "IngestOptions", "ShardDataset", "ingest"]
