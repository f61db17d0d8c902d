"""`eval.json`: one or more models' metrics on one dataset split, as `csdm eval` writes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

EVAL_FILE = "eval.json"
FORMAT_VERSION = 1


@dataclass
class ModelEval:
    """One model on the split: overall metrics, per-key F1, mouse confusion, per episode."""

    name: str  # as given on the command line
    kind: str  # run (torch), export (ONNX) or registry
    source: dict  # run folder / export folder / registry version, with the model's sha256
    metrics: dict[str, float]  # the seed's metrics over every frame, and seed_mean
    per_key: dict[str, dict[str, float]]  # key or click -> precision, recall, f1, support
    confusion: dict[str, list[list[int]]]  # mouse_x / mouse_y: rows true bin, columns predicted
    episodes: list[dict]  # one row per episode: episode, frames and the seed's metrics

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class EvalReport:
    """Every evaluated model on the same frames; `models[0]` is the one asked about."""

    data: str
    split: str | None
    episodes: int
    frames: int
    models: list[ModelEval]
    created: str = ""
    targets: dict = field(default_factory=dict)  # the label clean-ups applied (LossOptions)
    data_commit: str | None = None  # the Hub commit read, for a dataset on the Hub
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvalReport:
        """Inverse of `to_dict`."""
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{EVAL_FILE}: format_version {d.get('format_version')!r}, "
                f"this csdm reads {FORMAT_VERSION}"
            )
        d = dict(d)
        d["models"] = [ModelEval(**m) for m in d["models"]]
        return cls(**d)
