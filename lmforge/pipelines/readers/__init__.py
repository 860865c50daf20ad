"""Read input files into rows with Ray Data, quarantining what cannot be read.

Every input record becomes exactly one row. A JSONL line that is not JSON, bytes that
are not UTF-8, a CSV row with the wrong number of fields, a record over the size limit:
each is a `quarantined` row carrying the error, the file and the line, never an exception
that stops the job or a silent skip.

Modules: `discovery` (inputs -> files and their URIs), `formats` (one file's bytes ->
rows, by suffix), `datasource` (the Ray Dataset of every input's rows), `hub` (datasets
on the Hugging Face Hub).
"""

from lmforge.pipelines.readers.datasource import read_rows, record_files
from lmforge.pipelines.readers.discovery import expand, public_uri, split_hf
from lmforge.pipelines.readers.formats import arrow_rows, parquet_rows, parse_file
from lmforge.pipelines.readers.tally import ReadTally

__all__ = [
    "ReadTally", "arrow_rows", "expand", "parquet_rows", "parse_file", "public_uri", "read_rows",
    "record_files", "split_hf",
]  # fmt: skip
