"""Units of work as plain functions: synthesis, action inference, quality, labelling."""

from storage.catalog import COUNTERS
from tasks.infer import InferredActions, infer_actions
from tasks.labels import Labels, label_batch, label_metadata_file, write_labels
from tasks.quality import QualityThresholds
from tasks.synth import SynthConfig, write_synthetic_tree
from tasks.targets import quantise, training_targets

__all__ = [
    "COUNTERS",
    "InferredActions",
    "Labels",
    "QualityThresholds",
    "SynthConfig",
    "infer_actions",
    "label_batch",
    "label_metadata_file",
    "quantise",
    "training_targets",
    "write_labels",
    "write_synthetic_tree",
]
