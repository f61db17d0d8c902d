"""The training data API in one import: sampler, labels, windows, stream, loader, augmentation.

Each part lives in its own module (`sampler`, `labels`, `windows`, `stream`, `diagnostics`,
`augment`); this one re-exports them for callers and for checkpoints that name them.
"""

from training.augment import augment
from training.diagnostics import dataset_identity, why_untrainable
from training.labels import Labels, load_labels
from training.sampler import SamplerConfig
from training.stream import StreamState, WindowStream, make_loader, to_device
from training.windows import WindowIndex, build_index, subselect

__all__ = [
    "Labels",
    "SamplerConfig",
    "StreamState",
    "WindowIndex",
    "WindowStream",
    "augment",
    "build_index",
    "dataset_identity",
    "load_labels",
    "make_loader",
    "subselect",
    "to_device",
    "why_untrainable",
]
