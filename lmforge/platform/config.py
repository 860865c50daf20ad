"""Run recipes: typed, validated configuration for every stage.

A recipe is a YAML file under `configs/`. It is loaded, overridden from the command
line (`--set pretrain.max_steps=10`, `--input`, `--output`), and validated here, before
any cluster resource is requested. A mistake fails with one line naming the field.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from lmforge.pipelines.synthetic import SyntheticFilterConfig
from lmforge.train.presets import PRESETS


class ConfigError(ValueError):
    """A recipe that cannot run; the message is one line and names the field."""


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


PathList = Annotated[list[str], BeforeValidator(_as_list)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(Section):
    address: str | None = Field(
        None,
        description="Ray cluster to join. None: the RAY_ADDRESS environment variable if set "
        "(as under `ray job submit`), otherwise a new local Ray started in-process.",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs for an in-process local Ray (None: all of this machine)."
    )


class MlflowConfig(Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. None: MLFLOW_TRACKING_URI if set, otherwise a local "
        "SQLite store `mlflow.db` in the recipe's workdir.",
    )
    experiment: str = Field("lmforge", description="MLflow experiment name.")


class LanguageSection(Section):
    enabled: bool = Field(True, description="Detect each document's language (fastText lite).")
    languages: list[str] | None = Field(
        None, description="ISO 639-1 codes to keep (None: every language)."
    )
    min_score: float = Field(
        0.65, ge=0, le=1, description="Drop documents whose language score is at most this."
    )
    trust_input_lang: bool = Field(
        False, description="Keep a record's own `lang` field instead of detecting it."
    )


class QualitySection(Section):
    gopher_repetition: bool = Field(True, description="Gopher repetition rules (MassiveText).")
    gopher_quality: bool = Field(True, description="Gopher quality rules.")
    c4: bool = Field(True, description="C4 line removal and document rules.")
    c4_filter_no_terminal_punct: bool = Field(
        False, description="C4: drop lines without terminal punctuation (FineWeb ran False)."
    )
    fineweb: bool = Field(True, description="FineWeb's additional quality rules.")


class DecontamSection(Section):
    eval_sets: PathList = Field(
        default_factory=list,
        description="Evaluation files (GSM8K JSONL, HumanEval .jsonl.gz, MMLU CSV) whose "
        "n-grams must not appear in training data; also `--eval-set` on the command line.",
    )
    n_words: int = Field(13, ge=3, description="n-gram size in words.")
    n_chars: int = Field(50, ge=5, description="n-gram size in characters for CJK text.")


class MinHashSection(Section):
    enabled: bool = Field(True, description="MinHash LSH near-duplicate removal.")
    ngram: int = Field(5, ge=1, description="Words per shingle (characters for CJK: char_ngram).")
    char_ngram: int = Field(5, ge=1, description="Characters per shingle for CJK text.")
    num_bands: int = Field(14, ge=1, description="LSH bands.")
    rows_per_band: int = Field(8, ge=1, description="Rows (permutations) per band.")


class CurateConfig(Section):
    input: PathList = Field(
        default_factory=list,
        description="Files, folders, globs or URIs to read (JSONL, .jsonl.gz, .jsonl.zst, "
        "Parquet, CSV, .txt, Hugging Face datasets); `builtin:python-docs` builds a corpus "
        "from the docstrings of installed Python code.",
    )
    output: str | None = Field(None, description="Output folder (default: <workdir>/curated).")
    text_field: str = Field("text", description="Field that holds the document text.")
    id_field: str = Field("id", description="Field that holds a stable document id.")
    normalize: bool = Field(True, description="Unicode NFC, control characters, whitespace.")
    fix_mojibake: bool = Field(
        False, description="Before normalizing, repair mojibake (UTF-8 decoded as cp1252)."
    )
    min_chars: int = Field(200, ge=0, description="Drop documents shorter than this (characters).")
    min_words: int = Field(
        20, ge=0, description="Drop documents with fewer words (script-aware for CJK)."
    )
    max_record_bytes: int = Field(
        8_000_000, ge=1, description="Quarantine records larger than this (bytes)."
    )
    builtin_max_docs: int = Field(
        4000, ge=1, description="Cap on documents that `builtin:python-docs` generates."
    )
    language: LanguageSection = Field(default_factory=LanguageSection)
    quality: QualitySection = Field(default_factory=QualitySection)
    pii: bool = Field(True, description="Replace e-mails, public IPs, phones, cards, secrets.")
    decontam: DecontamSection = Field(default_factory=DecontamSection)
    exact_dedup: bool = Field(True, description="Drop exact duplicates (normalized text).")
    minhash: MinHashSection = Field(default_factory=MinHashSection)
    files_per_group: int = Field(
        16,
        ge=1,
        description="Input files processed per resumable unit: a rerun with the same output "
        "skips groups whose files are all finished.",
    )
    report: bool = Field(True, description="Write and log an HTML report with plots.")


class ScoringSection(Section):
    model: str | None = Field(
        None,
        description="Local Hugging Face model folder (or `models:/NAME@ALIAS` from the MLflow "
        "registry) that scores each kept conversation's answers by perplexity; None: no scoring.",
    )
    max_perplexity: float | None = Field(
        None, gt=1, description="Drop conversations above this perplexity; None only annotates."
    )
    batch_size: int = Field(8, ge=1, description="Conversations per forward pass.")
    max_tokens: int = Field(1024, ge=16, description="Tokens of a conversation scored.")
    num_actors: int | None = Field(
        None, ge=1, description="Scoring actors (None: one per GPU of the cluster, else 1)."
    )


class SyntheticConfig(Section):
    input: PathList = Field(
        default_factory=list,
        description="JSON/JSONL files of Alpaca, ShareGPT, OpenAI-messages or MT-Bench answer "
        "records; `builtin:synthetic-examples` is the small set shipped with lmforge.",
    )
    output: str | None = Field(None, description="Output folder (default: <workdir>/synthetic).")
    mtbench_questions: PathList = Field(
        default_factory=list,
        description="MT-Bench question files (question.jsonl) whose turns MT-Bench answer "
        "records are joined with by question_id.",
    )
    filters: SyntheticFilterConfig = Field(
        default_factory=SyntheticFilterConfig, description="Per-conversation filters."
    )
    decontam: DecontamSection = Field(
        default_factory=DecontamSection,
        description="Evaluation sets: n-gram overlap anywhere, or a user turn equal to a "
        "question (normalized), drops the conversation.",
    )
    dedup_prompts: bool = Field(
        True, description="Drop conversations whose prompt repeats exactly."
    )
    near_dedup: MinHashSection = Field(
        default_factory=lambda: MinHashSection(ngram=3),
        description="MinHash LSH over prompts (near duplicates); 3-word shingles by default, "
        "as prompts are short (one changed word in a 5-word-shingled 15-word prompt leaves "
        "a Jaccard similarity of about 0.5).",
    )
    scoring: ScoringSection = Field(default_factory=ScoringSection)
    report: bool = Field(True, description="Write and log an HTML report with examples.")


class TokenizeConfig(Section):
    input: PathList = Field(
        default_factory=list,
        description="Curated and filtered stage outputs to tokenize (default: the curate and "
        "filter-synthetic outputs of this recipe).",
    )
    output: str | None = Field(None, description="Output folder (default: <workdir>/tokens).")
    vocab_size: int = Field(
        4096, ge=300, description="BPE vocabulary size, special tokens included."
    )
    seq_len: int = Field(256, ge=8, description="Tokens per packed training sequence.")
    val_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Share of documents (by id hash) in the validation split."
    )
    tokenizer_train_docs: int = Field(
        20_000, ge=1, description="Documents sampled to train the tokenizer."
    )


class PretrainConfig(Section):
    input: str | None = Field(None, description="Token shards folder (default: <workdir>/tokens).")
    output: str | None = Field(None, description="Output folder (default: <workdir>/pretrain).")
    preset: str = Field("demo", description=f"Model shape: one of {', '.join(PRESETS)}.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on a cluster).")
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL backend.")
    cpus_per_worker: float = Field(
        1,
        gt=0,
        description="CPUs Ray reserves for each worker. Ray Data needs CPUs left over to "
        "stream the shards: on a 2-core laptop with 2 workers use 0.5.",
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Training precision.")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload optimizer state to CPU.")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    micro_batch_size: int = Field(8, ge=1, description="Sequences per worker per micro-step.")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    max_steps: int = Field(200, ge=1, description="Optimizer steps to train.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    min_lr: float = Field(1e-4, ge=0, description="Learning rate at the end of cosine decay.")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip (0: off).")
    log_every: int = Field(10, ge=1, description="Steps between progress lines and metrics.")
    eval_every: int = Field(100, ge=1, description="Steps between validation passes.")
    eval_batches: int = Field(8, ge=1, description="Micro-batches per validation pass.")
    checkpoint_every: int = Field(100, ge=1, description="Steps between DeepSpeed checkpoints.")
    seed: int = Field(1234, description="Random seed for weights and data order.")
    storage_path: str | None = Field(
        None,
        description="Ray Train storage (local path or s3:// URI shared by all nodes) for "
        "checkpoints (default: <output>/ray_train).",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; choose one of {', '.join(PRESETS)}")
        return v


class RegisterConfig(Section):
    input: str | None = Field(
        None, description="Hugging Face model folder (default: <workdir>/pretrain/model)."
    )
    model_name: str = Field("lmforge-model", description="Registered model name in MLflow.")
    alias: str = Field("candidate", description="Alias set on the new model version.")


class ServeConfig(Section):
    model: str | None = Field(
        None,
        description="`models:/NAME@ALIAS` in the MLflow registry, or a local Hugging Face "
        "folder (default: the registered model of this recipe).",
    )
    served_model_name: str | None = Field(
        None, description="Name clients use in requests (default: the registered model name)."
    )
    host: str = Field("127.0.0.1", description="HTTP host for Ray Serve's proxy.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port for Ray Serve's proxy.")
    num_replicas: int = Field(1, ge=1, description="Model replicas.")
    num_cpus: float = Field(1, ge=0, description="CPUs per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica.")
    max_tokens: int = Field(64, ge=1, description="Default completion length (tokens).")
    demo_prompt: str = Field(
        "What does the os.path.join function do?",
        description="Question the `run` pipeline asks the deployed model at the end.",
    )
    blocking: bool = Field(True, description="`lmforge serve` keeps serving until interrupted.")


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


def resolve_tracking_uri(uri: str | None, workdir: str) -> str:
    """An absolute tracking URI, so Ray workers with another cwd find the same store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workdir}/mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).absolute()
        uri = f"sqlite:///{path}"
    return uri


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a", "b", "c"], VALUE parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. pretrain.max_steps=10")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def load_recipe(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    stage: str | None = None,
    input: list[str] | None = None,
    output: str | None = None,
) -> Recipe:
    """Read, override and validate a recipe; raise ConfigError with one line on failure."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        data = loaded or {}
    for item in overrides:
        keys, value = parse_override(item)
        _set_path(data, keys, value)
    if stage is not None:
        section = STAGE_SECTIONS[stage]
        if input:
            field = "model" if section == "serve" else "input"
            _set_path(data, [section, field], input if section in LIST_INPUTS else input[0])
        if output:
            _set_path(data, [section, "output"], output)
    try:
        return Recipe.model_validate(data).with_defaults()
    except ValidationError as e:
        raise ConfigError(_first_error(e)) from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    field = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    got = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {err['input']!r})"
    more = f" [+{e.error_count() - 1} more]" if e.error_count() > 1 else ""
    return f"config field '{field}': {msg}{got}{more}"


# CLI stage name -> recipe section
STAGE_SECTIONS = {
    "curate": "curate",
    "filter-synthetic": "synthetic",
    "tokenize": "tokenize",
    "pretrain": "pretrain",
    "register": "register",
    "serve": "serve",
}
LIST_INPUTS = {"curate", "synthetic", "tokenize"}
