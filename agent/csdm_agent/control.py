"""Actions out: held keys and buttons tracked, sent through a sink, all released at the end."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

from csdm_agent.decode import Action

# Set 1 scan codes of the keys in the action space (the seed's key_output.py).
SCAN_CODES = {"w": 0x11, "a": 0x1E, "s": 0x1F, "d": 0x20, "space": 0x39, "ctrl": 0x1D,
              "shift": 0x2A, "1": 0x02, "2": 0x03, "3": 0x04, "r": 0x13}  # fmt: skip


class InputSink(Protocol):
    """Where input events go: Windows SendInput, or a recording."""

    def key(self, name: str, down: bool) -> None:
        """A key down or up."""

    def button(self, name: str, down: bool) -> None:
        """A mouse button down or up."""

    def move(self, dx: int, dy: int) -> None:
        """A relative mouse move."""


@dataclass
class RecordingSink:
    """Records events with their time instead of sending them (dry runs, tests)."""

    events: list[tuple[float, str, str, object]] = field(default_factory=list)

    def key(self, name: str, down: bool) -> None:
        """Record a key event."""
        self.events.append((time.perf_counter(), "key", name, down))

    def button(self, name: str, down: bool) -> None:
        """Record a mouse button event."""
        self.events.append((time.perf_counter(), "button", name, down))

    def move(self, dx: int, dy: int) -> None:
        """Record a relative mouse move."""
        self.events.append((time.perf_counter(), "move", "", (dx, dy)))


class SendInputSink:
    """Windows SendInput: scan-code key events and relative mouse moves."""

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise SystemExit("sending input needs Windows; use --dry-run elsewhere")
        import ctypes
        from ctypes import wintypes

        ulong_ptr = ctypes.c_size_t

        class KEYBDINPUT(ctypes.Structure):
            _fields_ = [("wVk", wintypes.WORD), ("wScan", wintypes.WORD),
                        ("dwFlags", wintypes.DWORD), ("time", wintypes.DWORD),
                        ("dwExtraInfo", ulong_ptr)]  # fmt: skip

        class MOUSEINPUT(ctypes.Structure):
            _fields_ = [("dx", wintypes.LONG), ("dy", wintypes.LONG),
                        ("mouseData", wintypes.DWORD), ("dwFlags", wintypes.DWORD),
                        ("time", wintypes.DWORD), ("dwExtraInfo", ulong_ptr)]  # fmt: skip

        class _U(ctypes.Union):
            _fields_ = [("ki", KEYBDINPUT), ("mi", MOUSEINPUT)]

        class INPUT(ctypes.Structure):
            _fields_ = [("type", wintypes.DWORD), ("u", _U)]

        self._ct, self._INPUT, self._K, self._M = ctypes, INPUT, KEYBDINPUT, MOUSEINPUT
        self._send = ctypes.windll.user32.SendInput

    def _emit(self, inp) -> None:
        self._send(1, self._ct.byref(inp), self._ct.sizeof(inp))

    def key(self, name: str, down: bool) -> None:
        """Scan-code key down/up (KEYEVENTF_SCANCODE, KEYEVENTF_KEYUP)."""
        inp = self._INPUT(type=1)
        inp.u.ki = self._K(0, SCAN_CODES[name], 0x0008 | (0 if down else 0x0002), 0, 0)
        self._emit(inp)

    def button(self, name: str, down: bool) -> None:
        """Left or right button down/up."""
        flag = {("lclick", True): 0x0002, ("lclick", False): 0x0004,
                ("rclick", True): 0x0008, ("rclick", False): 0x0010}[(name, down)]  # fmt: skip
        inp = self._INPUT(type=0)
        inp.u.mi = self._M(0, 0, 0, flag, 0, 0)
        self._emit(inp)

    def move(self, dx: int, dy: int) -> None:
        """Relative move (MOUSEEVENTF_MOVE): what the game reads with raw input off."""
        inp = self._INPUT(type=0)
        inp.u.mi = self._M(dx, dy, 0, 0x0001, 0, 0)
        self._emit(inp)


class Controller:
    """Applies actions as the seed does: releases what is no longer held, re-holds the rest."""

    def __init__(self, sink: InputSink) -> None:
        self.sink = sink
        self.keys: set[str] = set()
        self.buttons: set[str] = set()

    def apply(self, a: Action) -> None:
        """Key and button changes for this step, then the first half of the mouse move."""
        for k in sorted(self.keys - a.keys):
            self.sink.key(k, False)
        for b, on in (("lclick", a.lclick), ("rclick", a.rclick)):
            if b in self.buttons and not on:
                self.sink.button(b, False)
                self.buttons.discard(b)
        for k in sorted(a.keys):
            self.sink.key(k, True)
        self.keys = set(a.keys)
        for b, on in (("lclick", a.lclick), ("rclick", a.rclick)):
            if on:
                self.sink.button(b, True)
                self.buttons.add(b)
        self.half_move(a)

    def half_move(self, a: Action) -> None:
        """Half of the step's mouse move (the seed's IS_SPLIT_MOUSE: twice per step)."""
        if a.mouse_x or a.mouse_y:
            self.sink.move(round(a.mouse_x / 2), round(a.mouse_y / 2))

    def release_all(self) -> list[str]:
        """Release every held key and button; returns what was released."""
        released = sorted(self.keys) + sorted(self.buttons)
        for k in sorted(self.keys):
            self.sink.key(k, False)
        for b in sorted(self.buttons):
            self.sink.button(b, False)
        self.keys, self.buttons = set(), set()
        return released


def stop_key_pressed(vk: int) -> bool:
    """Whether the stop hotkey is down (Windows GetAsyncKeyState); never elsewhere."""
    if sys.platform != "win32":
        return False
    import ctypes

    return bool(ctypes.windll.user32.GetAsyncKeyState(vk) & 0x8000)
