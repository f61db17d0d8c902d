"""The player's own inputs on Windows: keys and buttons by GetAsyncKeyState, mouse by raw input.

Raw input gives the mouse's counts before Windows' pointer speed and acceleration, from a
message-only window registered with RIDEV_INPUTSINK, so it sees them while the game has focus.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from ctypes import wintypes

from csdm_agent.record import KEYS, Inputs

log = logging.getLogger("csdm_agent")

# Virtual-key codes of the action space's keys, and of the mouse buttons.
# a table: key -> virtual-key code, kept in rows
VK_KEYS = {"w": 0x57, "a": 0x41, "s": 0x53, "d": 0x44, "space": 0x20, "ctrl": 0x11,
           "shift": 0x10, "1": 0x31, "2": 0x32, "3": 0x33, "r": 0x52}  # fmt: skip
VK_LBUTTON, VK_RBUTTON = 0x01, 0x02
assert set(VK_KEYS) == set(KEYS)

WM_INPUT, WM_QUIT = 0x00FF, 0x0012
RID_INPUT, RIM_TYPEMOUSE = 0x10000003, 0
RIDEV_INPUTSINK = 0x00000100
MOUSE_MOVE_ABSOLUTE = 0x01  # tablets and remote desktops: positions, not counts
HWND_MESSAGE = -3


# Fixed-width fields (Windows' DWORD and LONG are 32-bit; wintypes' follow the C long of the
# platform), so the layout is the same wherever it is tested.
class RAWINPUTDEVICE(ctypes.Structure):
    """winuser.h RAWINPUTDEVICE."""

    _fields_ = [
        ("usUsagePage", ctypes.c_uint16),
        ("usUsage", ctypes.c_uint16),
        ("dwFlags", ctypes.c_uint32),
        ("hwndTarget", ctypes.c_void_p),
    ]


class RAWINPUTHEADER(ctypes.Structure):
    """winuser.h RAWINPUTHEADER: 24 bytes on 64-bit Windows."""

    _fields_ = [
        ("dwType", ctypes.c_uint32),
        ("dwSize", ctypes.c_uint32),
        ("hDevice", ctypes.c_void_p),
        ("wParam", ctypes.c_size_t),
    ]


class RAWMOUSE(ctypes.Structure):
    """winuser.h RAWMOUSE (the button union as one ULONG): 24 bytes."""

    _fields_ = [
        ("usFlags", ctypes.c_uint16),
        ("ulButtons", ctypes.c_uint32),
        ("ulRawButtons", ctypes.c_uint32),
        ("lLastX", ctypes.c_int32),
        ("lLastY", ctypes.c_int32),
        ("ulExtraInformation", ctypes.c_uint32),
    ]


def mouse_counts(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(dx, dy) of a RAWINPUT buffer from a mouse moving relatively; None for anything else."""
    head = ctypes.sizeof(RAWINPUTHEADER)
    if len(buf) < head + ctypes.sizeof(RAWMOUSE):
        return None
    header = RAWINPUTHEADER.from_buffer_copy(buf[:head])
    mouse = RAWMOUSE.from_buffer_copy(buf[head : head + ctypes.sizeof(RAWMOUSE)])
    if header.dwType != RIM_TYPEMOUSE or mouse.usFlags & MOUSE_MOVE_ABSOLUTE:
        return None
    return mouse.lLastX, mouse.lLastY


class RawMouse:
    """Sums raw mouse counts in a thread with a message-only window (Windows)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dx = self.dy = 0
        self._ready = threading.Event()
        self._error: str | None = None
        self._thread_id = 0
        self._thread = threading.Thread(target=self._run, name="csdm-raw-mouse", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        if self._error or not self._thread_id:
            raise OSError(f"raw mouse input: {self._error or 'no answer from Windows'}")

    def take(self) -> tuple[int, int]:
        """Counts since the last call."""
        with self._lock:
            out, self.dx, self.dy = (self.dx, self.dy), 0, 0
        return out

    def close(self) -> None:
        """End the message loop."""
        if self._thread_id:
            post = ctypes.WinDLL("user32", use_last_error=True).PostThreadMessageW
            post.argtypes = [wintypes.DWORD, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM]
            post.restype = wintypes.BOOL
            if not post(self._thread_id, WM_QUIT, 0, 0):
                log.warning(
                    "raw mouse input: could not stop its thread (%d)", ctypes.get_last_error()
                )
            self._thread.join(2)

    def _run(self) -> None:  # pragma: no cover - Windows only
        # own handles: argtypes set here do not change other modules' calls; errors kept
        user32 = ctypes.WinDLL("user32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        lresult = ctypes.c_ssize_t
        wndproc_t = ctypes.WINFUNCTYPE(
            lresult, wintypes.HWND, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM
        )

        class WNDCLASSW(ctypes.Structure):
            _fields_ = [
                ("style", wintypes.UINT),
                ("lpfnWndProc", wndproc_t),
                ("cbClsExtra", ctypes.c_int),
                ("cbWndExtra", ctypes.c_int),
                ("hInstance", wintypes.HINSTANCE),
                ("hIcon", wintypes.HICON),
                ("hCursor", wintypes.HANDLE),
                ("hbrBackground", wintypes.HBRUSH),
                ("lpszMenuName", wintypes.LPCWSTR),
                ("lpszClassName", wintypes.LPCWSTR),
            ]

        user32.DefWindowProcW.argtypes = [
            wintypes.HWND,
            wintypes.UINT,
            wintypes.WPARAM,
            wintypes.LPARAM,
        ]
        user32.DefWindowProcW.restype = lresult
        user32.GetRawInputData.argtypes = [
            wintypes.HANDLE,
            wintypes.UINT,
            wintypes.LPVOID,
            ctypes.POINTER(wintypes.UINT),
            wintypes.UINT,
        ]
        user32.GetRawInputData.restype = wintypes.UINT
        user32.CreateWindowExW.argtypes = [
            wintypes.DWORD,
            wintypes.LPCWSTR,
            wintypes.LPCWSTR,
            wintypes.DWORD,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            wintypes.HWND,
            wintypes.HMENU,
            wintypes.HINSTANCE,
            wintypes.LPVOID,
        ]
        user32.CreateWindowExW.restype = wintypes.HWND
        user32.GetMessageW.argtypes = [
            ctypes.POINTER(wintypes.MSG),
            wintypes.HWND,
            wintypes.UINT,
            wintypes.UINT,
        ]
        # handles above 2**32 (a 64-bit exe's base) need pointer-sized arguments
        user32.RegisterClassW.argtypes = [ctypes.POINTER(WNDCLASSW)]
        user32.RegisterRawInputDevices.argtypes = [
            ctypes.POINTER(RAWINPUTDEVICE),
            wintypes.UINT,
            wintypes.UINT,
        ]
        user32.DestroyWindow.argtypes = [wintypes.HWND]
        user32.UnregisterClassW.argtypes = [wintypes.LPCWSTR, wintypes.HINSTANCE]
        user32.TranslateMessage.argtypes = [ctypes.POINTER(wintypes.MSG)]
        user32.DispatchMessageW.argtypes = [ctypes.POINTER(wintypes.MSG)]
        kernel32.GetModuleHandleW.argtypes = [wintypes.LPCWSTR]
        kernel32.GetCurrentThreadId.restype = wintypes.DWORD
        kernel32.GetModuleHandleW.restype = wintypes.HMODULE
        header_size = ctypes.sizeof(RAWINPUTHEADER)

        def proc(hwnd, msg, wparam, lparam):
            if msg == WM_INPUT:
                size = wintypes.UINT(0)
                user32.GetRawInputData(lparam, RID_INPUT, None, ctypes.byref(size), header_size)
                buf = ctypes.create_string_buffer(size.value)
                got = user32.GetRawInputData(
                    lparam, RID_INPUT, buf, ctypes.byref(size), header_size
                )
                moved = mouse_counts(buf.raw[:got]) if got not in (0, 0xFFFFFFFF) else None
                if moved:
                    with self._lock:
                        self.dx += moved[0]
                        self.dy += moved[1]
            return user32.DefWindowProcW(hwnd, msg, wparam, lparam)

        callback = wndproc_t(proc)  # kept alive for the window's lifetime
        hinst = kernel32.GetModuleHandleW(None)
        wc = WNDCLASSW(lpfnWndProc=callback, hInstance=hinst, lpszClassName="csdm_raw_mouse")
        if not user32.RegisterClassW(ctypes.byref(wc)):
            self._error = f"RegisterClassW failed ({ctypes.get_last_error()})"
            self._ready.set()
            return
        hwnd = user32.CreateWindowExW(
            0, "csdm_raw_mouse", "csdm", 0, 0, 0, 0, 0, HWND_MESSAGE, None, hinst, None
        )
        device = RAWINPUTDEVICE(0x01, 0x02, RIDEV_INPUTSINK, hwnd)  # generic desktop, mouse
        if not hwnd or not user32.RegisterRawInputDevices(
            ctypes.byref(device), 1, ctypes.sizeof(device)
        ):
            self._error = f"RegisterRawInputDevices failed ({ctypes.get_last_error()})"
            if hwnd:
                user32.DestroyWindow(hwnd)
            user32.UnregisterClassW("csdm_raw_mouse", hinst)  # a retry can register it again
            self._ready.set()
            return
        self._thread_id = kernel32.GetCurrentThreadId()
        self._ready.set()
        msg = wintypes.MSG()
        while user32.GetMessageW(ctypes.byref(msg), None, 0, 0) > 0:
            user32.TranslateMessage(ctypes.byref(msg))
            user32.DispatchMessageW(ctypes.byref(msg))
        user32.DestroyWindow(hwnd)
        user32.UnregisterClassW("csdm_raw_mouse", hinst)


class WindowsInput:
    """Keys and buttons held now, or pressed since the last read; raw mouse counts since then.

    GetAsyncKeyState's low bit catches a tap that went down and up between two reads.
    """

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise SystemExit("recording your inputs needs Windows")
        self._state = ctypes.windll.user32.GetAsyncKeyState
        self.mouse = RawMouse()
        self.read()  # clear the pressed-since bits

    def _down(self, vk: int) -> bool:
        return bool(self._state(vk) & 0x8001)

    def read(self) -> Inputs:
        """Inputs of the step that just ended."""
        keys = frozenset(k for k, vk in VK_KEYS.items() if self._down(vk))
        dx, dy = self.mouse.take()
        return Inputs(keys, self._down(VK_LBUTTON), self._down(VK_RBUTTON), dx, dy)

    def close(self) -> None:
        """Stop the raw input thread."""
        self.mouse.close()
