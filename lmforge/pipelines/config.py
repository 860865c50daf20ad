"""The recipe sections of the Ray Data stages: `curate`, `synthetic`, `tokenize`.

Each field's description is the documentation users read (`configs/*.yaml` use them).
Sections that an inner step also needs (`decontam`, `minhash`) map to that step's own
config in one method each, so curate and filter-synthetic build them the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lmforge.pipelines.synthetic.config import SyntheticFilterConfig
from lmforge.platform.config import PathList, Section


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
    by_prose: bool = Field(
        True,
        description="Name the language of the prose: paragraphs without their code, command "
        "and table lines, each identified alone, weighted by letters (a translated manual "
        "quoting English commands is still its own language). False: one verdict on the "
        "whole document. The whole-document verdict is in `meta` either way.",
    )


class QualitySection(Section):
    gopher_repetition: bool = Field(True, description="Gopher repetition rules (MassiveText).")
    gopher_quality: bool = Field(True, description="Gopher quality rules.")
    gopher_alpha_words: Literal["whitespace", "datatrove"] = Field(
        "whitespace",
        description='What Gopher\'s "80% of words contain a letter" counts: `whitespace` '
        "(the paper: whitespace-separated words, punctuation-only tokens such as `:` `«` `—` "
        "left out; script runs for ja/zh/th) or `datatrove` (every spaCy token, punctuation "
        "included, as datatrove does: spaced French typography then fails).",
    )
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

    def index_config(self) -> Any:
        """The n-gram index's own config (`DecontamConfig`) for these sizes."""
        from lmforge.pipelines.decontam import DecontamConfig

        return DecontamConfig(n_words=self.n_words, n_chars=self.n_chars)


class MinHashSection(Section):
    enabled: bool = Field(True, description="MinHash LSH near-duplicate removal.")
    ngram: int = Field(5, ge=1, description="Words per shingle (characters for CJK: char_ngram).")
    char_ngram: int = Field(5, ge=1, description="Characters per shingle for CJK text.")
    num_bands: int = Field(14, ge=1, description="LSH bands.")
    rows_per_band: int = Field(8, ge=1, description="Rows (permutations) per band.")

    def dedup_config(self, **fixed: Any) -> Any:
        """The MinHash step's own config (`MinHashConfig`); `fixed` sets the fields a stage
        does not expose (step and reason names, the text function)."""
        from lmforge.pipelines.minhash import MinHashConfig

        return MinHashConfig(
            ngram=self.ngram,
            char_ngram=self.char_ngram,
            num_bands=self.num_bands,
            rows_per_band=self.rows_per_band,
            **fixed,
        )


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


class ScoringConfig(Section):
    """Perplexity scoring of kept conversations (`synthetic.scoring`; see `scoring.py`)."""

    model: str | None = Field(
        None,
        description="Local Hugging Face model folder (or `models:/NAME@ALIAS` from the MLflow "
        "registry) that scores each kept conversation's answers by perplexity; None: no scoring.",
    )
    max_perplexity: float | None = Field(
        None,
        ge=1,
        description="Drop conversations above this perplexity (a perplexity is never below 1, "
        "so a lower threshold would drop every row); None only annotates.",
    )
    batch_size: int = Field(8, ge=1, description="Conversations per forward pass.")
    max_tokens: int = Field(
        1024,
        ge=16,
        description="Tokens of a conversation scored (also cut to the model's "
        "max_position_embeddings); only assistant tokens inside are scored.",
    )
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
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
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
    mixture: dict[str, float] | None = Field(
        None,
        description="Share of train tokens per source: a key is an input of tokenize.input "
        "(as written there) or a group of tokenize.groups, a value its weight (> 0; weights "
        "are normalized to sum 1). A source is repeated (whole epochs plus a seeded sample "
        "of its documents) or sampled down to its share. None: the natural mix, every "
        "document once.",
    )
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Names for groups of inputs (name -> inputs of tokenize.input), usable "
        "as keys of tokenize.mixture; an input in no group is a source of its own.",
    )
    mixture_tokens: int | None = Field(
        None,
        ge=1,
        description="Train tokens of the mixture (documents with their end-of-text token, "
        "before packing); None: as many as the train split holds unmixed.",
    )
    seed: int = Field(
        0, description="Seed of the mixture's document samples and of the tokenizer's sample."
    )
    loss_on: Literal["all", "assistant"] = Field(
        "all",
        description="Which tokens are targets of the training loss. all: every token "
        "(pretraining). assistant: in conversations (text with the chat role tokens), only "
        "the assistant turns (with the newline ending each and the end-of-text after a last "
        "assistant turn); role tokens, turn headers and system and user turns get no loss; "
        "documents without role tokens keep every token. The shards then carry a "
        "`loss_mask` column that pretraining honours.",
    )
