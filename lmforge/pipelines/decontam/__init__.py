"""Evaluation-set decontamination: drop training documents that contain test items.

An evaluation item becomes a set of n-grams; a document sharing any one of them with an
item is dropped, reason `decontam/<eval set>`, and its meta names the item and the n-gram.

Modules: `eval_sets` (GSM8K, HumanEval, MMLU and JSONL files -> items), `ngram_index`
(64-bit keys of token windows, and the index of them), `decontaminate` (the filter: which
tokens, which sizes, which short items count).
"""

from lmforge.pipelines.decontam.decontaminate import DecontamConfig, Decontaminate
from lmforge.pipelines.decontam.eval_sets import EvalItem, EvalSet, load_eval_set

# the names jobs/filter_synthetic.py and the tests import from here; tokens and scripts
# are defined with the other word and writing-system rules
from lmforge.pipelines.words import match_characters as characters
from lmforge.pipelines.words import match_words as words
from lmforge.pipelines.writing_systems import cjk_share

__all__ = [
    "DecontamConfig", "Decontaminate", "EvalItem", "EvalSet", "characters", "cjk_share",
    "load_eval_set", "words",
]  # fmt: skip
