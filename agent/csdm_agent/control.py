"""Actions out: held keys and buttons tracked, sent through a sink, all released at the end."""

from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

from csdm_agent.decode import Action

# Set 1 scan codes of the keys in the action space (the seed's key_output.py).
# a table: key -> scan code, rows as the keyboard reads
SCAN_CODES = {"w": 0x11, "a": 0x1E, "s": 0x1F, "d": 0x20, "space": 0x39, "ctrl": 0x1D,
              "shift": 0x2A, "1": 0x02, "2": 0x03, "3": 0x04, "r": 0x13,
              "n": 0x31, "f": 0x21, "g": 0x22, "h": 0x23, "j": 0x24, "k": 0x25,
              "l": 0x26}  # fmt: skip


class InputSink(Protocol):
    """Where input events go: Windows SendInput, or a recording."""

    def key(self, name: str, down: bool) -> None:
        """A key down or up."""

    def button(self, name: str, down: bool) -> None:
        """A mouse button down or up."""

    def move(self, dx: int, dy: int) -> None:
        """Move the view by (dx, dy) pixels of cursor displacement."""


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
        """Record a mouse move."""
        self.events.append((time.perf_counter(), "move", "", (dx, dy)))


ULONG_PTR = ctypes.c_size_t


class KEYBDINPUT(ctypes.Structure):
    """winuser.h KEYBDINPUT."""

    _fields_ = [
        ("wVk", ctypes.c_uint16),
        ("wScan", ctypes.c_uint16),
        ("dwFlags", ctypes.c_uint32),
        ("time", ctypes.c_uint32),
        ("dwExtraInfo", ULONG_PTR),
    ]


class MOUSEINPUT(ctypes.Structure):
    """winuser.h MOUSEINPUT."""

    _fields_ = [
        ("dx", ctypes.c_int32),
        ("dy", ctypes.c_int32),
        ("mouseData", ctypes.c_uint32),
        ("dwFlags", ctypes.c_uint32),
        ("time", ctypes.c_uint32),
        ("dwExtraInfo", ULONG_PTR),
    ]


class HARDWAREINPUT(ctypes.Structure):
    """winuser.h HARDWAREINPUT (only for the union's size)."""

    _fields_ = [
        ("uMsg", ctypes.c_uint32),
        ("wParamL", ctypes.c_uint16),
        ("wParamH", ctypes.c_uint16),
    ]


class _INPUT_UNION(ctypes.Union):
    _fields_ = [("mi", MOUSEINPUT), ("ki", KEYBDINPUT), ("hi", HARDWAREINPUT)]


class INPUT(ctypes.Structure):
    """winuser.h INPUT: 40 bytes on 64-bit Windows, the union at offset 8."""

    _fields_ = [("type", ctypes.c_uint32), ("u", _INPUT_UNION)]


INPUT_MOUSE, INPUT_KEYBOARD = 0, 1
KEYEVENTF_KEYUP, KEYEVENTF_SCANCODE = 0x0002, 0x0008
MOUSEEVENTF_MOVE, MOUSEEVENTF_ABSOLUTE = 0x0001, 0x8000
# a table: key -> scan code, rows as the keyboard reads
BUTTON_FLAGS = {("lclick", True): 0x0002, ("lclick", False): 0x0004,
                ("rclick", True): 0x0008, ("rclick", False): 0x0010}  # fmt: skip


class SendInputSink:
    """Windows SendInput: scan-code keys; mouse moves as the seed's `set_pos`.

    The game (raw input off) re-centres the cursor and reads how far it moved; the seed put it
    at centre + move with an absolute SendInput, which Windows' pointer acceleration leaves
    alone, so this does the same around the cursor position found at start.
    """

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise SystemExit("sending input needs Windows; use --dry-run elsewhere")
        user32 = ctypes.windll.user32
        user32.SendInput.argtypes = [ctypes.c_uint, ctypes.POINTER(INPUT), ctypes.c_int]
        user32.SendInput.restype = ctypes.c_uint
        self._send = user32.SendInput
        point = (ctypes.c_long * 2)()
        user32.GetCursorPos(point)
        self.centre = (point[0], point[1])
        self.screen = (user32.GetSystemMetrics(0), user32.GetSystemMetrics(1))

    def _emit(self, inp: INPUT) -> None:
        if self._send(1, ctypes.byref(inp), ctypes.sizeof(INPUT)) != 1:
            raise OSError(
                ctypes.get_last_error(),
                "SendInput refused the event (is the game "
                "running as administrator while the agent is not?)",
            )

    def key(self, name: str, down: bool) -> None:
        """Scan-code key down/up."""
        inp = INPUT(type=INPUT_KEYBOARD)
        flags = KEYEVENTF_SCANCODE | (0 if down else KEYEVENTF_KEYUP)
        inp.u.ki = KEYBDINPUT(0, SCAN_CODES[name], flags, 0, 0)
        self._emit(inp)

    def button(self, name: str, down: bool) -> None:
        """Left or right button down/up."""
        inp = INPUT(type=INPUT_MOUSE)
        inp.u.mi = MOUSEINPUT(0, 0, 0, BUTTON_FLAGS[(name, down)], 0, 0)
        self._emit(inp)

    def move(self, dx: int, dy: int) -> None:
        """Cursor to centre + (dx, dy), in SendInput's 0-65535 absolute coordinates."""
        x = 1 + int((self.centre[0] + dx) * 65536 / self.screen[0])
        y = 1 + int((self.centre[1] + dy) * 65536 / self.screen[1])
        inp = INPUT(type=INPUT_MOUSE)
        inp.u.mi = MOUSEINPUT(x, y, 0, MOUSEEVENTF_MOVE | MOUSEEVENTF_ABSOLUTE, 0, 0)
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
        self.keys &= a.keys
        for k in sorted(a.keys):
            self.keys.add(k)  # tracked before it is sent, so an interrupt still releases it
            self.sink.key(k, True)
        for b, on in (("lclick", a.lclick), ("rclick", a.rclick)):
            if on:
                self.buttons.add(b)
                self.sink.button(b, True)
        self.half_move(a)

    def tap(self, key: str) -> None:
        """Press and release a key the policy never holds (the clear-decals key)."""
        self.sink.key(key, True)
        self.sink.key(key, False)

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
