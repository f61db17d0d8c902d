"""Training on a processed dataset: the paper's network, loss, data feed, export and segments.

The names most users need, imported on first use (torch loads only when one is asked for);
each module's docstring says what else it offers.
"""

from __future__ import annotations

from storage.lazy_names import lazy_getattr

_API = {
    "DEFAULT": "training.actions",
    "ActionSpace": "training.actions",
    "Checkpoint": "training.checkpoint",
    "read_checkpoint": "training.checkpoint",
    "write_checkpoint": "training.checkpoint",
    "SamplerConfig": "training.data",
    "WindowStream": "training.data",
    "build_index": "training.data",
    "load_labels": "training.data",
    "make_loader": "training.data",
    "FullResDataset": "training.diamond",
    "Segment": "training.diamond",
    "SegmentId": "training.diamond",
    "SegmentStream": "training.segments",
    "StreamState": "training.stream",
    "to_device": "training.stream",
    "TrainConfig": "training.train",
}
__all__ = sorted(_API)

__getattr__ = lazy_getattr("training", _API)
