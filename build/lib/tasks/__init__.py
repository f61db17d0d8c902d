"""Units of work as plain functions: synthesis, action inference, quality, labelling."""

from storage.catalog import COUNTERS
from tasks.actions.infer import InferredActions, infer_actions
from tasks.actions.labels import Labels, label_batch, label_metadata_file, write_labels
from tasks.actions.quality import QualityThresholds
from tasks.actions.targets import quantise, training_targets
from tasks.synth.tree import SynthConfig, write_synthetic_tree

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
