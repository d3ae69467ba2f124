"""Credentials reach the pods as environment variables from Kubernetes Secrets (never as
pipeline parameters, which are stored in plain text with the run)."""

from kfp import kubernetes

S3_SECRET = "nice-s3"
MLFLOW_SECRET = "nice-mlflow"
# Required keys fail the pod early when missing; optional ones (a custom endpoint, a tracking
# server without auth) may be left out of the Secret.
S3_REQUIRED = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
S3_OPTIONAL = {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION"}
MLFLOW_REQUIRED = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}
MLFLOW_OPTIONAL = {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                   "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}


def with_secrets(task, s3: bool = True, mlflow: bool = True):  # noqa: ANN001,ANN201 - kfp PipelineTask
    if s3:
        kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_REQUIRED)
        kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_OPTIONAL, optional=True)
    if mlflow:
        kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env=MLFLOW_REQUIRED)
        kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env=MLFLOW_OPTIONAL,
                                     optional=True)
    return task
