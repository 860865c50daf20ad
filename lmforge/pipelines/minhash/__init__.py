"""MinHash LSH near-duplicate removal on Ray Data, with no step that holds the corpus.

    rows --signatures, bands--> (band_index, band_hash, id) --groupby bucket--> edges
         --connected components (large-star / small-star rounds)--> (id, root, size)
         --groupby id, with the rows--> rows, near duplicates marked dropped

Modules, in that order: `config` (MinHashConfig), `hashing` and `signatures` (numpy
signatures of a batch), `banding` (bands, buckets, edges), `components` (the rounds),
`groups` (how every shuffle is keyed), `dedup` (the step, labels merged into the rows).
"""

from lmforge.pipelines.minhash.banding import band_hashes, band_records, bucket_edges
from lmforge.pipelines.minhash.components import (
    ROOT,
    SIZE,
    both_ways,
    component_labels,
    connected_components,
    from_larger,
    large_star,
    small_star,
    unique_edges,
)
from lmforge.pipelines.minhash.config import REASON, STEP, MinHashConfig
from lmforge.pipelines.minhash.dedup import apply_labels, cluster_sizes, minhash_dedup
from lmforge.pipelines.minhash.groups import GROUP, grouped, keyed, num_groups
from lmforge.pipelines.minhash.hashing import fmix64, hash_strings
from lmforge.pipelines.minhash.signatures import (
    MinHasher,
    char_tokens,
    cjk_documents,
    shingle_hashes,
    word_tokens,
)

# the name the tests and the benchmark import it by; it lives with the other words
from lmforge.pipelines.words import TRIMMED_PUNCTUATION as PUNCT

__all__ = [
    "GROUP", "PUNCT", "REASON", "ROOT", "SIZE", "STEP", "MinHashConfig", "MinHasher",
    "apply_labels", "band_hashes", "band_records", "both_ways", "bucket_edges", "char_tokens",
    "cjk_documents", "cluster_sizes", "component_labels", "connected_components", "fmix64",
    "from_larger", "grouped", "hash_strings", "keyed", "large_star", "minhash_dedup",
    "num_groups", "shingle_hashes", "small_star", "unique_edges", "word_tokens",
]  # fmt: skip
