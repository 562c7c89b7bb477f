"""MLflow "models from code" entry point for a masklab package (no pickled Python objects).

MLflow copies this file into every registered masklab model; `mlflow.pyfunc.load_model` runs it,
and it rebuilds the network from ``masklab_model.yaml`` and ``weights.safetensors``.
Input: (N, H, W, 3) uint8 RGB images of one size; output: what the package's task predicts
(semantic: (N, H, W) uint8 class ids). Params ``device`` (auto, cpu, cuda) and ``batch_size``
choose where and how fast; the inference path is the one evaluation scores.
"""

import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model


class MasklabSegmenter(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from masklab.inference.package import load_package_dir
        from masklab.tasks import task_for

        self.package = load_package_dir(context.artifacts["package"])
        self.task = task_for(self.package.spec)

    # The np.ndarray hint tells MLflow to take the explicit tensor signature as it is.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from masklab.inference import Predictor

        if isinstance(model_input, dict):  # a named-tensor signature delivers {"images": array}
            model_input = model_input["images"]
        images = np.asarray(model_input, dtype=np.uint8)
        if images.ndim == 3:
            images = images[None]
        params = params or {}
        predictor = Predictor(self.package.model, self.package.input_rule, params.get("device", "auto"),
                              int(params.get("batch_size", 8)))
        return self.task.package_output(self.task.predict(predictor, list(images)))


set_model(MasklabSegmenter())
