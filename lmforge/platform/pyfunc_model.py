"""The MLflow pyfunc model that `registry.register` logs (models-from-code: no pickle).

`mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(["prompt", ...])` returns
one completion per prompt, so the registered model is usable by any MLflow tool;
lmforge's own server loads the Hugging Face folder directly. The folder is loaded by
`hf_model.load_causal_lm`, which the model carries with it (`code_paths` in
`registry.register`, a module with no lmforge imports), so it loads where lmforge is
not installed.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class CausalLMModel(PythonModel):
    def load_context(self, context: Any) -> None:
        try:
            from lmforge.platform.hf_model import load_causal_lm
        except ImportError:  # loaded where lmforge is not installed: the copy in the model
            from hf_model import load_causal_lm  # type: ignore[no-redef]

        self.model, self.tokenizer = load_causal_lm(context.artifacts["hf_model"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # no type hints here: MLflow would read them as a schema to enforce
        import torch

        prompts = model_input if isinstance(model_input, list) else list(model_input.iloc[:, 0])
        max_new = int((params or {}).get("max_new_tokens", 32))
        out = []
        for prompt in prompts:
            ids = self.tokenizer(str(prompt), return_tensors="pt").input_ids.to(self.model.device)
            with torch.no_grad():
                gen = self.model.generate(ids, max_new_tokens=max_new, do_sample=False)
            out.append(self.tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
        return out


mlflow.models.set_model(CausalLMModel())
