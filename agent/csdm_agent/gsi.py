"""CS:GO Game State Integration: the game POSTs its state; the paper's measures come from it.

The game sends JSON to the uri of a `gamestate_integration_*.cfg` in its `cfg` folder each time
the state changes. A post whose `auth.token` differs is ignored, as the seed's `meta_utils.py`
server does. Kills, deaths and assists add up each post's increase of `player.match_stats`
(a fall, as when a new match starts, counts the new values), and only while `player` is the
agent's own (dead or spectating, the game describes the player being watched).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("csdm_agent")
CFG_NAME = "gamestate_integration_csdm.cfg"
DATA_BLOCKS = ("provider", "player_id", "player_state", "player_weapons", "player_match_stats")
MAX_POST = 1 << 20  # bytes; the game's posts are a few KB
MAX_COUNT = 1 << 20  # a kill, death, ammo or health count beyond this is not the game's


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
        player = _dict(body.get("player"))
        state, stats = _dict(player.get("state")), _dict(player.get("match_stats"))
        active = next(
            (
                w
                for w in _dict(player.get("weapons")).values()
                if isinstance(w, dict) and w.get("state") == "active"
            ),
            {},
        )
        return cls(
            state.get("health"),
            state.get("armor"),
            active.get("name"),
            active.get("ammo_clip"),
            stats.get("kills"),
            stats.get("deaths"),
            stats.get("assists"),
        )


def _dict(x: object) -> dict:
    return x if isinstance(x, dict) else {}


def _count_ok(x: object) -> bool:
    return x is None or (type(x) is int and -1 <= x <= MAX_COUNT)


def malformed(body: dict) -> str | None:
    """What in a post's `player` block is not what the game sends; None if all is."""
    player = body.get("player", {})
    if not isinstance(player, dict):
        return "player is not an object"
    parts = {k: player.get(k, {}) for k in ("state", "match_stats", "weapons")}
    if not all(isinstance(v, dict) for v in parts.values()):
        return "state, match_stats or weapons is not an object"
    state, stats = parts["state"], parts["match_stats"]
    counts = [
        state.get("health"),
        state.get("armor"),
        stats.get("kills"),
        stats.get("deaths"),
        stats.get("assists"),
    ]
    for w in parts["weapons"].values():
        if not isinstance(w, dict) or not isinstance(w.get("name", ""), str):
            return "a weapon is not an object with a name"
        counts.append(w.get("ammo_clip"))
    if not all(map(_count_ok, counts)):
        return "a count is not a whole number in range"
    return None


class _Server(ThreadingHTTPServer):
    # Windows' SO_REUSEADDR lets a second listener share a port silently: refuse it there
    allow_reuse_address = sys.platform != "win32"
    daemon_threads = True


class GsiListener:
    """An HTTP listener for the game's posts, in a thread; `latest` is the newest valid state."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.token = token
        self.latest: PlayerState | None = None
        self.player: dict | None = None  # the newest post's `player` block about the agent
        self.spectating = False  # the newest post is about another player
        self.totals: list[int] | None = None  # kills, deaths, assists since the first stats
        self._stats: tuple[int, int, int] | None = None  # the last post's match stats
        self.posts = 0
        self.ignored = 0
        self.dropped = 0  # malformed: oversized, not JSON, or fields of the wrong kind
        self.watching = 0  # posts about another player (the agent dead or spectating)
        self._lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a half-sent post does not hold a thread

            def do_POST(self) -> None:
                length = self.headers.get("Content-Length") or "0"
                if not length.isdigit() or int(length) > MAX_POST:  # never read, never kept
                    listener._drop(f"a Content-Length of {length[:20]}")
                    self.close_connection = True
                    self.send_response(413)
                    self.end_headers()
                    return
                listener._receive(self.rfile.read(int(length)))  # before the reply: in order
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet: the game posts many times a second
                pass

        try:
            self.server = _Server((host, port), Handler)
        except OSError as e:
            raise OSError(
                f"--gsi {host}:{port}: cannot listen ({e}); another program may use "
                "the port: choose another with gsi-config --port N and --gsi "
                f"{host}:N"
            ) from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _drop(self, why: str) -> None:
        with self._lock:
            if self.dropped == 0:
                log.warning("GSI: dropped a malformed post (%s); the rest are counted quietly", why)
            self.dropped += 1

    def _receive(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:  # not JSON, too deep, or a 5,000-digit number
            return self._drop(f"not JSON the game writes: {str(e)[:60]}")
        if isinstance(body, dict) and (why := malformed(body)):
            return self._drop(why)
        if not isinstance(body, dict) or _dict(body.get("auth")).get("token") != self.token:
            with self._lock:
                if self.ignored == 0:
                    log.warning("GSI: ignored a post without this run's token (--gsi-token)")
                self.ignored += 1
            return
        me = _dict(body.get("provider")).get("steamid")
        who = _dict(body.get("player")).get("steamid")
        with self._lock:
            self.posts += 1
            self.spectating = bool(me and who and me != who)
            if self.spectating:  # the agent is dead or spectating: not its state
                self.watching += 1
                return
            state = PlayerState.from_post(body)
            self.latest = state
            self.player = _dict(body.get("player"))
            if None not in (state.kills, state.deaths, state.assists):
                self._count((state.kills, state.deaths, state.assists))

    def _count(self, stats: tuple[int, int, int]) -> None:
        if self._stats is None:
            self.totals = [0, 0, 0]
        elif any(b < a for a, b in zip(self._stats, stats, strict=True)):  # a new match
            self.totals = [t + b for t, b in zip(self.totals, stats, strict=True)]
        else:
            self.totals = [
                t + b - a for t, a, b in zip(self.totals, self._stats, stats, strict=True)
            ]
        self._stats = stats

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

    def seed_state(self) -> dict | None:
        """The newest state as the seed's recorder keeps it (`gsi_*`, `found_active`).

        Watching another player means the player is dead: health 0, no weapon. None before the
        first post about the player.
        """
        with self._lock:
            player, spectating = self.player, self.spectating
        return None if player is None else seed_fields(player, spectating)

    def summary(self, steps: list[dict | None], minutes: float) -> dict:
        """The paper's measures over the run: kills, deaths and assists, per minute, K/D.

        K/D is kills / max(deaths, 1), the usual convention; no stats at all give nulls.
        """
        with self._lock:
            totals, posts, ignored, watching = self.totals, self.posts, self.ignored, self.watching
            dropped = self.dropped
        kills, deaths, assists = totals if totals is not None else (None, None, None)

        def per_min(n: int | None) -> float | None:
            return round(n / minutes, 4) if n is not None and minutes > 0 else None

        return {
            "kills": kills,
            "deaths": deaths,
            "assists": assists,
            "minutes": round(minutes, 4),
            "kills_per_min": per_min(kills),
            "deaths_per_min": per_min(deaths),
            "kd": round(kills / max(deaths, 1), 4) if kills is not None else None,
            "posts": posts,
            "ignored_posts": ignored,
            "watching_posts": watching,
            "dropped_posts": dropped,
            "steps": steps,
        }


def seed_fields(player: dict, dead: bool = False) -> dict:
    """The GSI part of the seed recorder's `curr_vars` from a post's `player` block.

    The active weapon is the last one not holstered (active or reloading: the seed's loop keeps
    overwriting it); its ammo is -1 for knives and stackable items, as
    `dm_record_data_me_wasd.py` has it.
    """
    weapons = {k: w for k, w in _dict(player.get("weapons")).items() if isinstance(w, dict)}
    stats = _dict(player.get("match_stats"))
    out = {
        "gsi_team": str(player.get("team", "")),
        "gsi_health": 0 if dead else int(_dict(player.get("state")).get("health", 0)),
        "gsi_kills": int(stats.get("kills", 0)),
        "gsi_deaths": int(stats.get("deaths", 0)),
        "gsi_weapons": weapons,
        "found_active": False,
    }
    drawn = [w for w in weapons.values() if w.get("state") != "holstered"]
    active = drawn[-1] if drawn and not dead else None
    if active is not None and "name" in active:
        out.update(gsi_weap_active=active, found_active=True)
        unloaded = active.get("type") in ("Knife", "StackableItem")
        out["gsi_ammo"] = -1 if unloaded else int(active.get("ammo_clip", -1))
    return out


def config_text(port: int, token: str, host: str = "127.0.0.1") -> str:
    """The content of `gamestate_integration_csdm.cfg` (Valve's KeyValues format)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: a port is from 1 to 65535")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", token):
        raise ValueError(f"token {token!r}: use letters, digits, '.', '_' and '-' only")
    if host in ("0.0.0.0", "::", ""):
        raise ValueError(
            f"--host {host!r}: the game needs an address it can post to, such as 127.0.0.1"
        )
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
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"--gsi {text!r}: expected HOST:PORT with a port from 1 to 65535, as "
            "in the game's cfg, e.g. 127.0.0.1:3000"
        )
    return host or "127.0.0.1", int(port)
