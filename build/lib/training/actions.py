"""The one action space shared by training, export and, through the descriptor, the agent."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from storage import action_space as A


@dataclass(frozen=True)
class Crop:
    """Where the seed's `screen_input.py` cuts the model input out of the game window."""

    client_width: int = 1024
    client_height: int = 768
    sides: int = 100
    top: int = 135
    bottom: int = 135


@dataclass(frozen=True)
class ActionSpace:
    """Keys, clicks, mouse bins, frame shape and rate; output heads are laid out in this order."""

    keys: tuple[str, ...] = A.KEYS
    clicks: tuple[str, ...] = ("lclick", "rclick")
    mouse_x_bins: tuple[float, ...] = tuple(float(b) for b in A.MOUSE_X_BINS)
    mouse_y_bins: tuple[float, ...] = tuple(float(b) for b in A.MOUSE_Y_BINS)
    fps: int = A.FPS
    height: int = A.FRAME_SHAPE[0]
    width: int = A.FRAME_SHAPE[1]
    channel_order: str = "BGR"
    crop: Crop = field(default_factory=Crop)

    @property
    def n_keys(self) -> int:
        """Number of keys."""
        return len(self.keys)

    @property
    def n_clicks(self) -> int:
        """Number of mouse buttons."""
        return len(self.clicks)

    @property
    def n_mouse_x(self) -> int:
        """Number of horizontal mouse bins."""
        return len(self.mouse_x_bins)

    @property
    def n_mouse_y(self) -> int:
        """Number of vertical mouse bins."""
        return len(self.mouse_y_bins)

    @property
    def heads(self) -> dict[str, int]:
        """Output head name -> width, in output order (value last, as the seed concatenates)."""
        return {
            "keys": self.n_keys,
            "clicks": self.n_clicks,
            "mouse_x": self.n_mouse_x,
            "mouse_y": self.n_mouse_y,
            "value": 1,
        }

    @property
    def n_outputs(self) -> int:
        """Width of the concatenated output."""
        return sum(self.heads.values())

    def to_dict(self) -> dict:
        """JSON-ready form, written into every exported descriptor."""
        d = asdict(self)
        d["heads"] = self.heads
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ActionSpace:
        """Inverse of `to_dict` (extra keys such as `heads` are derived, so ignored)."""
        d = {k: v for k, v in d.items() if k != "heads"}
        d["crop"] = Crop(**d.get("crop", {}))
        for k in ("keys", "clicks", "mouse_x_bins", "mouse_y_bins"):
            d[k] = tuple(d[k])
        return cls(**d)


DEFAULT = ActionSpace()
