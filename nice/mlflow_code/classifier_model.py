"""MLflow model-from-code: the NICE classifier (see nice.mlflow_models.ClassifierModel)."""

import mlflow.models

from nice.mlflow_models import ClassifierModel

mlflow.models.set_model(ClassifierModel())
