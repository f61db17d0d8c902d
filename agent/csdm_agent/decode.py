"""Policy outputs to game actions, as the seed's `dm_run_agent.py` decodes them.

Deterministic part (`onehot_to_actions`): a key is held when its probability rounds to 1, the
clicks likewise, mouse moves are the most likely bins. Then, as the seed runs with
IS_PROBABILISTIC_ACTIONS: clicks, jump and reload are drawn from their probabilities; after 8
idle steps (no WASD, no mouse move) the mouse is sampled from its distributions, after 96 it
is uniform, the recurrent state is reset and a movement key is drawn; the state is also reset
at random once in 1000 steps. Horizontal moves are clipped to +-300 and sent in two halves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MOVE_KEYS = ("w", "a", "s", "d")


@dataclass(frozen=True)
class DecodeOptions:
    """The seed's switches, with its defaults.

    IS_CLICKS, IS_MOUSEMOVE, IS_WASD, IS_JUMP, IS_RELOAD on; IS_RCLICK and IS_KEYS (ctrl,
    shift, 1, 2, 3) off.
    """

    clicks: bool = True
    rclick: bool = False
    mouse: bool = True
    wasd: bool = True
    jump: bool = True
    reload: bool = True
    other_keys: bool = False
    jump_boost: float = 1.0  # the seed multiplied by 5 for models fine-tuned on expert data
    reset_chance: float = 0.001
    mouse_x_clip: float = 300.0


@dataclass
class Action:
    """What to do this step: keys to hold, buttons, the mouse move (before halving)."""

    keys: frozenset[str]
    lclick: bool
    rclick: bool
    mouse_x: float
    mouse_y: float
    reset_state: bool = False


@dataclass
class Decoder:
    """Stateful decoder: counts idle steps; draws from its own seeded generator."""

    keys: tuple[str, ...]
    mouse_x_bins: np.ndarray
    mouse_y_bins: np.ndarray
    options: DecodeOptions = field(default_factory=DecodeOptions)
    seed: int | None = None
    inaction: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.mouse_x_bins = np.asarray(self.mouse_x_bins, dtype=np.float64)
        self.mouse_y_bins = np.asarray(self.mouse_y_bins, dtype=np.float64)

    @classmethod
    def from_descriptor(
        cls, d: dict, options: DecodeOptions | None = None, seed: int | None = None
    ) -> Decoder:
        """A decoder for the action space written into an exported descriptor."""
        space = d["action_space"]
        return cls(
            tuple(space["keys"]),
            space["mouse_x_bins"],
            space["mouse_y_bins"],
            options or DecodeOptions(),
            seed,
        )

    def decode(self, out: dict[str, np.ndarray]) -> Action:
        """One step's head probabilities -> the action to apply."""
        o, rand = self.options, self.rng.random
        kp, cp = out["keys"], out["clicks"]
        mx_p, my_p = out["mouse_x"].astype(np.float64), out["mouse_y"].astype(np.float64)
        held = [k for k, p in zip(self.keys, kp, strict=True) if np.round(p) == 1]
        mouse_x = float(self.mouse_x_bins[int(np.argmax(mx_p))])
        mouse_y = float(self.mouse_y_bins[int(np.argmax(my_p))])
        moving = any(k in held for k in MOVE_KEYS) if o.wasd else False
        self.inaction = 0 if moving or mouse_x != 0 or mouse_y != 0 else self.inaction + 1
        # the seed's IS_PROBABILISTIC_ACTIONS branch, draws in its order
        lclick = bool(rand() < cp[0] and o.clicks)
        rclick = bool(rand() < cp[1] and o.clicks)
        if o.jump:
            held = [k for k in held if k != "space"]
            if not rand() > kp[self.keys.index("space")] * o.jump_boost:
                held.append("space")
        if o.reload:
            held = [k for k in held if k != "r"]
            if not rand() > kp[self.keys.index("r")]:
                held.append("r")
        reset = False
        if self.inaction > 8 and o.mouse:
            mouse_x = float(self.rng.choice(self.mouse_x_bins, p=mx_p / mx_p.sum()))
            mouse_y = float(self.rng.choice(self.mouse_y_bins, p=my_p / my_p.sum()))
        if self.inaction > 96 and o.mouse:
            mouse_x = float(self.rng.choice(self.mouse_x_bins))
            mouse_y = float(self.rng.choice(self.mouse_y_bins))
            reset = True
        if rand() > 1 - o.reset_chance:
            reset = True
        if self.inaction > 96 and o.wasd:
            for k in MOVE_KEYS:
                if rand() < max(kp[self.keys.index(k)], 0.05):
                    held.append(k)
                    break
        allowed = {k for k in self.keys if o.other_keys}
        allowed |= set(MOVE_KEYS) if o.wasd else set()
        allowed |= {"space"} if o.jump else set()
        allowed |= {"r"} if o.reload else set()
        mouse_x = float(np.clip(mouse_x, -o.mouse_x_clip, o.mouse_x_clip))
        return Action(
            frozenset(k for k in held if k in allowed),
            lclick and o.clicks,
            rclick and o.rclick,
            mouse_x if o.mouse else 0.0,
            mouse_y if o.mouse else 0.0,
            reset,
        )
