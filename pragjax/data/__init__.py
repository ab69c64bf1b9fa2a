"""Data layer: JSONL records, collators (loss masks, padding, packing), grain pipelines, group batches, TFDS builders.

`tfds_builders` is not imported here: it needs `tensorflow-datasets` (no
TensorFlow), an optional dependency; import `pragjax.data.tfds_builders` directly.
"""

from pragjax.data.collate import pack_examples, pad_batch, tokenize_record, tokenize_records
from pragjax.data.errors import DataError
from pragjax.data.groups import GroupIterator, collate_groups
from pragjax.data.jsonl import JsonlSource, read_jsonl, validate_jsonl
from pragjax.data.pipeline import TrainIterator, make_train_iterator, to_global_arrays

__all__ = [
    "DataError", "JsonlSource", "read_jsonl", "validate_jsonl", "tokenize_record", "tokenize_records",
    "pad_batch", "pack_examples", "TrainIterator", "make_train_iterator", "to_global_arrays", "collate_groups",
    "GroupIterator",
]
