from kfp import dsl

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def source_fingerprint(source: str) -> str:
    """What the dataset source holds now (a builtin name, or a hash of the prefix's listing):
    ingest takes it as an input, so KFP's cache reuses an ingest only for unchanged data."""
    from nice.ingest.sources import source_fingerprint as fingerprint

    return fingerprint(source)
