"""Container images the components run in (built from images/; tag = project version)."""

VERSION = "0.1.0"
RUNTIME_IMAGE = f"ghcr.io/nice-pipeline/nice-runtime:{VERSION}"  # CPU: torch, kfp, mlflow, nice
TRAINER_IMAGE = f"ghcr.io/nice-pipeline/nice-trainer-cuda:{VERSION}"  # CUDA torch for mask-generator training
