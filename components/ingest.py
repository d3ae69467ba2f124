from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def ingest(source: str, dataset: Output[Dataset], kfp_run_id: str = "", pipeline_name: str = "",
           limit: int = 0, size: int = 64, seed: int = 0, source_fingerprint: str = "") -> None:
    """Validate, deduplicate and split a source (mnist, fashion-mnist, mnist-m, a folder or
    s3:// prefix of class_name/*.jpg) into a versioned Dataset artifact. `source_fingerprint`
    is not read: it is part of the cache key (see components/fingerprint.py)."""
    from nice.jobs import StepContext, ingest_step
    from nice.tracking import Tracker

    ctx = StepContext(Tracker(), kfp_run_id, pipeline_name, progress=False)
    res = ingest_step(source, dataset.path, ctx, limit=limit or None, size=size, seed=seed)
    dataset.metadata.update({"content_hash": res["content_hash"], "counts": res["counts"],
                             "class_names": res["class_names"], "channels": res["channels"], "source": source})
