"""MLflow pyfunc wrappers: `mlflow.pyfunc.load_model(uri).predict(images)` on uint8 images
(N,H,W) or (N,H,W,3). The artifacts are the project's checkpoints, loaded weights-only."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import torch



def _to_tensor(images: Any) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(images, dtype=np.uint8)).float().div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Predicts class probabilities, shape (N, classes)."""

    _skip_type_hint_validation = True  # signatures come from the input examples

    def load_context(self, context: Any) -> None:
        from nice.checkpoint import load_classifier

        self.model, _, _ = load_classifier(context.artifacts["checkpoint"])
        self.model.eval()

    def predict(self, context, model_input, params=None):  # noqa: ANN001,ANN201
        with torch.inference_mode():
            return torch.softmax(self.model(_to_tensor(model_input)), dim=1).numpy()


class MaskGeneratorModel(mlflow.pyfunc.PythonModel):
    """Predicts the binarised keep-mask at the model's tau, one value per gate block (N, h, w)."""

    _skip_type_hint_validation = True  # signatures come from the input examples

    def load_context(self, context: Any) -> None:
        from nice.bundle import NiceModel
        from nice.gates import HardConcrete

        self.nice = NiceModel.load(context.artifacts["nice_model"])
        self.gates = HardConcrete(self.nice.config.gates)

    def predict(self, context, model_input, params=None):  # noqa: ANN001,ANN201
        cfg = self.nice.config
        with torch.inference_mode():
            log_alpha = self.nice.generator(_to_tensor(model_input))
            z = self.gates.binarize(log_alpha, cfg.guard.tau, cfg.guard.dilate)
        return z[:, 0].to(torch.uint8).numpy()
