"""Container images the components run in: the one place their names and tags live.
`make images` builds each from its Dockerfile."""

VERSION = "0.1.0"
REGISTRY = "ghcr.io/nice-pipeline"
RUNTIME_IMAGE = f"{REGISTRY}/nice-runtime:{VERSION}"  # CPU: torch, kfp, mlflow, nice
TRAINER_IMAGE = f"{REGISTRY}/nice-trainer-cuda:{VERSION}"  # CUDA torch for mask-generator training
DOCKERFILES = {RUNTIME_IMAGE: "images/runtime/Dockerfile", TRAINER_IMAGE: "images/trainer/Dockerfile"}
