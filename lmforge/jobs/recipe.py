"""The recipe: every part's section assembled into one validated document.

Each part owns its sections (`pipelines.config`, `train.config`, `serve.config`,
`platform.config` and `platform.registry`); this module only puts them together, fills
the defaults that chain one stage's output into the next stage's input, and applies the
command line's `--input`/`--output` through the stage table.
"""

from __future__ import annotations

import os
import warnings

from pydantic import Field, ValidationError

from lmforge.jobs.stages import get_stage
from lmforge.pipelines.config import CurateConfig, SyntheticConfig, TokenizeConfig
from lmforge.platform.config import (
    ConfigError,
    MlflowConfig,
    RayConfig,
    Section,
    first_error,
    read_recipe_data,
    resolve_tracking_uri,
    set_path,
)
from lmforge.platform.registry import RegisterConfig
from lmforge.serve.config import ServeConfig
from lmforge.train.config import PretrainConfig

# `register` is also ABCMeta.register on the class; on instances the field wins, which is
# all a recipe needs, so pydantic's shadowing warning is silenced for this one class.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class Recipe(Section):
        name: str = Field("lmforge", description="Recipe name, used for the pipeline run.")
        workdir: str = Field("lmforge-work", description="Default root of every stage's output.")
        ray: RayConfig = Field(default_factory=RayConfig)
        mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
        curate: CurateConfig = Field(default_factory=CurateConfig)
        synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
        tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
        pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
        register: RegisterConfig = Field(default_factory=RegisterConfig)
        serve: ServeConfig = Field(default_factory=ServeConfig)

        def with_defaults(self) -> Recipe:
            """Fill the unset inputs and outputs so that each stage reads the one before it."""
            r = self.model_copy(deep=True)
            w = r.workdir.rstrip("/")
            r.curate.output = r.curate.output or f"{w}/curated"
            r.synthetic.output = r.synthetic.output or f"{w}/synthetic"
            r.tokenize.input = r.tokenize.input or [r.curate.output, r.synthetic.output]
            r.tokenize.output = r.tokenize.output or f"{w}/tokens"
            r.pretrain.input = r.pretrain.input or r.tokenize.output
            r.pretrain.output = r.pretrain.output or f"{w}/pretrain"
            r.register.input = r.register.input or f"{r.pretrain.output}/model"
            r.serve.model = r.serve.model or f"models:/{r.register.model_name}@{r.register.alias}"
            r.serve.served_model_name = r.serve.served_model_name or r.register.model_name
            r.mlflow.tracking_uri = resolve_tracking_uri(r.mlflow.tracking_uri, w)
            return r


def load_recipe(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    stage: str | None = None,
    input: list[str] | None = None,
    output: str | None = None,
) -> Recipe:
    """Read, override and validate a recipe; raise ConfigError with one line on failure.

    stage: the stage whose section `input`/`output` (the command line's) set."""
    data = read_recipe_data(path, overrides)
    if stage is not None:
        s = get_stage(stage)
        if input:
            set_path(data, [s.section, s.input_field], input if s.many_inputs else input[0])
        if output:
            set_path(data, [s.section, "output"], output)
    try:
        return Recipe.model_validate(data).with_defaults()
    except ValidationError as e:
        raise ConfigError(first_error(e)) from None
