"""MLflow model-from-code: the NICE mask generator (see nice.mlflow_models.MaskGeneratorModel)."""

import mlflow.models

from nice.mlflow_models import MaskGeneratorModel

mlflow.models.set_model(MaskGeneratorModel())
