"""CS:GO Game State Integration: the game POSTs its state; the paper's measures come from it.

The game sends JSON to the uri of a `gamestate_integration_*.cfg` in its `cfg` folder each time
the state changes. A post whose `auth.token` differs is ignored, as the seed's `meta_utils.py`
server does. Kills, deaths and assists are the change of `player.match_stats` over the run.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("csdm_agent")
CFG_NAME = "gamestate_integration_csdm.cfg"
DATA_BLOCKS = ("provider", "player_id", "player_state", "player_weapons", "player_match_stats")


@dataclass(frozen=True)
class PlayerState:
    """What one post says about the player; None where the post does not say."""

    health: int | None
    armor: int | None
    weapon: str | None  # the active weapon
    ammo_clip: int | None
    kills: int | None
    deaths: int | None
    assists: int | None

    @classmethod
    def from_post(cls, body: dict) -> PlayerState:
        """Read the fields the agent logs from one GSI post."""
        player = body.get("player") or {}
        state, stats = player.get("state") or {}, player.get("match_stats") or {}
        active = next((w for w in (player.get("weapons") or {}).values()
                       if isinstance(w, dict) and w.get("state") == "active"), {})  # fmt: skip
        return cls(state.get("health"), state.get("armor"), active.get("name"),
                   active.get("ammo_clip"), stats.get("kills"), stats.get("deaths"),
                   stats.get("assists"))  # fmt: skip


class GsiListener:
    """An HTTP listener for the game's posts, in a thread; `latest` is the newest valid state."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.token = token
        self.latest: PlayerState | None = None
        self.first: PlayerState | None = None  # the first post with match stats
        self.posts = 0
        self.ignored = 0
        self._lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                listener._receive(self.rfile.read(length))  # before the reply: posts stay ordered
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet: the game posts many times a second
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _receive(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or (body.get("auth") or {}).get("token") != self.token:
            with self._lock:
                self.ignored += 1
            return
        state = PlayerState.from_post(body)
        with self._lock:
            self.posts += 1
            self.latest = state
            if self.first is None and state.kills is not None:
                self.first = state

    def __enter__(self) -> GsiListener:
        self._thread.start()
        log.info("GSI listener on %s:%d", *self.server.server_address[:2])
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> dict | None:
        """The newest state as a dict, for the per-step log."""
        with self._lock:
            return asdict(self.latest) if self.latest is not None else None

    def summary(self, steps: list[dict | None], minutes: float) -> dict:
        """The paper's measures over the run: changes in kills, deaths and assists, per minute."""
        with self._lock:
            first, last = self.first, self.latest

        def change(field: str) -> int | None:
            a = getattr(first, field) if first else None
            b = getattr(last, field) if last else None
            return b - a if a is not None and b is not None else None

        kills, deaths, assists = change("kills"), change("deaths"), change("assists")

        def per_min(n: int | None) -> float | None:
            return round(n / minutes, 4) if n is not None and minutes > 0 else None

        return {
            "kills": kills, "deaths": deaths, "assists": assists, "minutes": round(minutes, 4),
            "kills_per_min": per_min(kills), "deaths_per_min": per_min(deaths),
            "kd": round(kills / deaths, 4) if kills is not None and deaths else None,
            "posts": self.posts, "ignored_posts": self.ignored, "steps": steps,
        }  # fmt: skip


def config_text(port: int, token: str, host: str = "127.0.0.1") -> str:
    """The content of `gamestate_integration_csdm.cfg` (Valve's KeyValues format)."""
    blocks = "\n".join(f'        "{b}" "1"' for b in DATA_BLOCKS)
    return (
        '"csdm"\n{\n'
        f'    "uri" "http://{host}:{port}"\n'
        '    "timeout" "5.0"\n    "buffer" "0.1"\n    "throttle" "0.1"\n    "heartbeat" "5.0"\n'
        f'    "auth"\n    {{\n        "token" "{token}"\n    }}\n'
        f'    "data"\n    {{\n{blocks}\n    }}\n}}\n'
    )


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or PORT alone, on 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--gsi {text!r}: expected HOST:PORT, e.g. 127.0.0.1:3000")
    return host or "127.0.0.1", int(port)
