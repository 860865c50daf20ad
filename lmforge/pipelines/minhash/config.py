"""How MinHash shingles, signs and bands documents, and how it finds their components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STEP, REASON = "minhash_dedup", "near_duplicate"


@dataclass(kw_only=True)
class MinHashConfig:
    """How documents are shingled, signed and banded, and how components are found.

    The defaults are datatrove's and FineWeb's: 5-gram shingles, 14 bands of 8 rows
    (112 permutations). Two documents with Jaccard similarity s share at least one band
    with probability 1 - (1 - s^8)^14, an S-curve that crosses 1/2 near the threshold
    (1/b)^(1/r) = (1/14)^(1/8) ≈ 0.72: at s = 0.8 a pair is found 92% of the time,
    at s = 0.9 99.9%, at s = 0.5 only 5%.
    """

    ngram: int = 5
    """Words per shingle; words are the text lowercased, split at whitespace, with
    punctuation trimmed from both ends (a word of punctuation alone is skipped)."""
    char_ngram: int = 5
    """Characters per shingle for CJK text, which does not separate words by spaces."""
    cjk_share: float = 0.1
    """A document whose characters are at least this share CJK/Kana/Hangul is shingled
    by characters (whitespace, punctuation and symbols removed), others by words. In the
    Japanese Debian documents the share is 0.32 at the median, under 0.1 for the 10% that
    are mostly commands and paths, which word shingles suit."""
    num_bands: int = 14
    """LSH bands b: documents sharing all rows of any one band become candidates."""
    rows_per_band: int = 8
    """Rows r per band; the signature has b * r permutations."""
    seed: int = 1
    """Seed of the permutations: runs with one seed give the same signatures."""
    max_cc_iterations: int = 30
    """At most this many large-star + small-star rounds; they converge in O(log^2 n)
    (Kiveris et al. 2014), in 2-4 rounds on real duplicate clusters. A run that hits the
    limit logs a warning and merges only what it has connected."""
    shuffle_strategy: str | None = "sort_shuffle_pull_based"
    """Ray Data shuffle for this step's groupbys and counts (a `DataContext.shuffle_strategy`
    value; None keeps the caller's). The task-based sort shuffle starts in well under a
    second; the hash shuffle starts aggregator actors per operation (7-20 s each on a busy
    2-core machine), which would dominate the small shuffles of the component rounds.
    Ray plans a dataset's shuffles with its own context, so the returned dataset keeps
    this strategy (set `out.context.shuffle_strategy` for shuffles after it)."""
    step: str = STEP
    """The step name dropped rows carry (`prompt_dedup` when deduplicating prompts)."""
    reason: str = REASON
    """The reason dropped rows carry."""
    text_of: Any = None
    """A function from a batch (pyarrow Table) to the texts to compare (a string array);
    None compares the `text` column. The synthetic stage compares prompts this way."""
    group_bytes: int = 64 << 20
    """About how many bytes of records one `map_groups` call holds: each shuffle has
    ceil(size / group_bytes) groups, so a task's memory is bounded whatever the corpus."""

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    @property
    def threshold(self) -> float:
        """Similarity where the S-curve is steepest, (1/b)^(1/r)."""
        return float((1 / self.num_bands) ** (1 / self.rows_per_band))
