"""The agent in the game: GSI stats from real HTTP posts, the game's cfg, `run --model` lookup."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from csdm_agent.artifact import Artifact, VerificationError
from csdm_agent.capture import ReplayFrames
from csdm_agent.cli import main as agent_main
from csdm_agent.control import Controller, RecordingSink
from csdm_agent.decode import Decoder
from csdm_agent.gsi import CFG_NAME, DATA_BLOCKS, GsiListener
from csdm_agent.loop import run
from csdm_agent.policy import Policy
from csdm_agent.pull import find_model, pull

from storage.dataset import open_dataset
from storage.registry import open_registry


def _post(port: int, body: dict | bytes) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}", data=data, headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(req, timeout=10).read()


def _state(token: str, kills: int, deaths: int, assists: int, health: int, ammo: int) -> dict:
    """A post as CS:GO sends it with csdm's cfg (provider, player_id, state, weapons, stats)."""
    return {
        "provider": {"name": "Counter-Strike: Global Offensive", "appid": 730},
        "player": {
            "steamid": "76561190000000000",
            "name": "me",
            "state": {"health": health, "armor": 100, "helmet": True, "flashed": 0},
            "weapons": {
                "weapon_0": {"name": "weapon_knife", "state": "holstered"},
                "weapon_1": {"name": "weapon_ak47", "ammo_clip": ammo, "state": "active"},
            },
            "match_stats": {"kills": kills, "assists": assists, "deaths": deaths, "mvps": 0},
        },
        "auth": {"token": token},
    }


class PostingFrames:
    """A replay whose game posts its state over HTTP just before given steps' frames."""

    def __init__(self, frames: ReplayFrames, port: int, posts: dict[int, dict | bytes]) -> None:
        self.frames, self.port, self.posts, self.i = frames, port, posts, 0

    def grab(self):
        if self.i in self.posts:
            _post(self.port, self.posts[self.i])
        self.i += 1
        return self.frames.grab()


def _replay(processed: Path, tmp_path: Path, n: int) -> Path:
    ds = open_dataset(processed)
    np.save(tmp_path / "episode.npy", ds.frames(ds.episodes[3], 0, n))
    return tmp_path / "episode.npy"


def test_match_stats_come_from_the_games_posts(
    registered: dict, processed: Path, tmp_path: Path
) -> None:
    art = Artifact.open(registered["export"])
    with GsiListener("127.0.0.1", 0, "s3cret") as gsi:
        posts = {
            0: _state("s3cret", kills=3, deaths=1, assists=0, health=100, ammo=30),
            10: _state("other", kills=99, deaths=0, assists=9, health=1, ammo=1),  # ignored
            20: _state("s3cret", kills=5, deaths=2, assists=1, health=40, ammo=12),
            30: b"not json",  # dropped as malformed
            35: {"provider": {}, "player": {}},  # no auth at all: ignored
        }
        frames = PostingFrames(ReplayFrames(_replay(processed, tmp_path, 40)), gsi.port, posts)
        s = run(
            Policy(art),
            Decoder.from_descriptor(art.descriptor, seed=0),
            frames,
            Controller(RecordingSink()),
            fps=16,
            pace=False,
            gsi=gsi.snapshot,
        )
        out = gsi.summary(s.gsi, len(s.step) / 16 / 60)
    minutes = 40 / 16 / 60
    assert (out["kills"], out["deaths"], out["assists"]) == (2, 1, 1)
    assert out["minutes"] == pytest.approx(minutes, abs=1e-4)
    assert out["kills_per_min"] == pytest.approx(2 / minutes, rel=1e-3)
    assert out["deaths_per_min"] == pytest.approx(1 / minutes, rel=1e-3)
    assert out["kd"] == 2.0 and (out["posts"], out["ignored_posts"], out["dropped_posts"]) == (
        2,
        2,
        1,
    )
    steps = out["steps"]
    assert len(steps) == 40
    assert steps[5] == {
        "health": 100,
        "armor": 100,
        "weapon": "weapon_ak47",
        "ammo_clip": 30,
        "kills": 3,
        "deaths": 1,
        "assists": 0,
    }
    assert steps[15]["kills"] == 3  # the wrong token's 99 never counted
    assert steps[25]["health"] == 40 and steps[39]["kills"] == 5


def test_a_new_match_and_a_watched_player_do_not_skew_the_counts() -> None:
    with GsiListener("127.0.0.1", 0, "t") as gsi:
        for k, d, a in ((3, 1, 0), (5, 2, 1), (0, 0, 0), (1, 0, 0)):  # a new match after 5/2/1
            _post(gsi.port, _state("t", k, d, a, 100, 30))
        watched = _state("t", kills=40, deaths=3, assists=0, health=80, ammo=5)
        watched["provider"]["steamid"] = "76561190000000000"  # me, dead: the killer is shown
        watched["player"]["steamid"] = "76561199999999999"
        _post(gsi.port, watched)
        out = gsi.summary([], 1.0)
    assert (out["kills"], out["deaths"], out["assists"]) == (3, 1, 1)
    assert (out["posts"], out["watching_posts"], out["kd"]) == (5, 1, 3.0)


def test_no_post_means_no_numbers_not_zeros() -> None:
    with GsiListener("127.0.0.1", 0, "t") as gsi:
        out = gsi.summary([None, None], 2 / 16 / 60)
    assert out["kills"] is None and out["kd"] is None and out["kills_per_min"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_run_with_gsi_and_the_cfg_it_needs(
    registered: dict, processed: Path, tmp_path: Path, capsys
) -> None:
    port = _free_port()
    assert (
        agent_main(["gsi-config", "--port", str(port), "--token", "tok", "--out", str(tmp_path)])
        == 0
    )
    cfg = (tmp_path / CFG_NAME).read_text()
    assert f'"uri" "http://127.0.0.1:{port}"' in cfg and '"token" "tok"' in cfg
    assert all(f'"{b}" "1"' in cfg for b in DATA_BLOCKS)
    assert cfg.count("{") == cfg.count("}") == 3
    assert agent_main(["gsi-config", "--token", 'a" b', "--out", str(tmp_path)]) == 2
    stop = threading.Event()

    def game() -> None:  # posts as the game does, from before the agent listens to after
        while not stop.is_set():
            for token in ("tok", "nope"):
                with contextlib.suppress(OSError):  # refused until the agent listens
                    _post(port, _state(token, 7, 4, 2, 100, 30))
            stop.wait(0.02)

    thread = threading.Thread(target=game, daemon=True)
    thread.start()
    art = pull(registered["registry"], "cs", tmp_path / "models")
    summary = tmp_path / "run.json"
    try:
        code = agent_main(
            [
                "run",
                "--model",
                str(tmp_path / "models"),
                "--dry-run",
                "--replay",
                str(_replay(processed, tmp_path, 40)),
                "--gsi",
                f"127.0.0.1:{port}",
                "--gsi-token",
                "tok",
                "--summary",
                str(summary),
            ]
        )
    finally:
        stop.set()
        thread.join()
    assert code == 0
    gsi = json.loads(summary.read_text())["gsi"]
    assert gsi["posts"] > 0 and gsi["ignored_posts"] > 0
    assert (gsi["kills"], gsi["deaths"], gsi["assists"]) == (0, 0, 0)  # nothing changed
    assert {s["kills"] for s in gsi["steps"] if s} == {7}
    assert "GSI: 0 kills" in capsys.readouterr().out
    assert art.folder.parent == tmp_path / "models" / "cs"  # --model models found it
    assert agent_main(["run", "--model", str(art.folder), "--dry-run", "--gsi", "1234"]) == 2


def test_run_finds_the_model_in_a_pull_destination(
    registered: dict, processed: Path, tmp_path: Path, capsys
) -> None:
    from training.export import export
    from training.train import save_untrained

    reg = tmp_path / "reg"
    open_registry(reg, "cs").register(registered["export"], alias="production")
    save_untrained(tmp_path / "other", "tiny", seed=5)
    export(tmp_path / "other", tmp_path / "other" / "export")
    open_registry(reg, "cs").register(tmp_path / "other" / "export")
    dest = tmp_path / "models"
    assert (
        agent_main(
            ["pull", "--registry", str(reg), "--name", "cs", "--version", "1", "--dest", str(dest)]
        )
        == 0
    )
    assert f"play it: csdm-agent run --model {dest / 'cs' / 'v1'}" in capsys.readouterr().out
    pull(str(reg), "cs", dest)  # v2, the latest
    assert find_model(dest) == find_model(dest / "cs") == dest / "cs" / "v2"
    assert find_model(dest / "cs" / "v1") == dest / "cs" / "v1"
    (dest / "cs" / "v2" / "policy.onnx").write_bytes(b"altered")
    assert find_model(dest / "cs") == dest / "cs" / "v1"  # the newest copy that verifies
    (dest / "other" / "v1").mkdir(parents=True)
    with pytest.raises(VerificationError, match=r"holds several models \(cs, other\)"):
        find_model(dest)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(VerificationError, match=r"not a csdm model folder.*found: notes\.txt"):
        find_model(tmp_path / "empty")
    with pytest.raises(VerificationError, match="no such folder; pull a model first"):
        find_model(tmp_path / "nowhere")
    # NAME@alias: pulled from the registry, then played
    replay = _replay(processed, tmp_path, 3)
    fresh = tmp_path / "fresh"
    assert (
        agent_main(
            [
                "run",
                "--model",
                "cs@production",
                "--registry",
                str(reg),
                "--dest",
                str(fresh),
                "--dry-run",
                "--replay",
                str(replay),
            ]
        )
        == 0
    )
    assert (fresh / "cs" / "v1" / "policy.json").is_file()
    assert agent_main(["run", "--model", "cs@production", "--dry-run"]) == 2  # no --registry


def test_seed_fields_follow_the_seed_recorder() -> None:
    """The seed's rules: last weapon not holstered; -1 ammo for knives and stackable items."""
    from csdm_agent.gsi import seed_fields

    def player(*weapons: dict, health: int = 90) -> dict:
        return {
            "team": "T",
            "state": {"health": health},
            "match_stats": {"kills": 4, "deaths": 2},
            "weapons": {f"weapon_{i}": w for i, w in enumerate(weapons)},
        }

    ak = {"name": "weapon_ak47", "type": "Rifle", "ammo_clip": 12, "state": "reloading"}
    knife = {"name": "weapon_knife", "type": "Knife", "state": "active"}
    taser = {"name": "weapon_taser", "ammo_clip": 1, "state": "active"}
    shot = {"name": "weapon_healthshot", "type": "StackableItem", "state": "active"}
    holstered = {**knife, "state": "holstered"}
    got = seed_fields(player(holstered, ak))
    assert (got["gsi_team"], got["gsi_health"], got["gsi_kills"], got["gsi_deaths"]) == (
        "T",
        90,
        4,
        2,
    )
    assert got["found_active"] and got["gsi_weap_active"] is not None and got["gsi_ammo"] == 12
    # two not holstered (a post mid-switch): the seed's loop keeps the last one
    assert seed_fields(player(ak, knife))["gsi_weap_active"]["name"] == "weapon_knife"
    assert seed_fields(player(knife, ak))["gsi_ammo"] == 12
    assert seed_fields(player(knife))["gsi_ammo"] == -1
    assert seed_fields(player(shot))["gsi_ammo"] == -1
    assert seed_fields(player(taser))["gsi_ammo"] == 1  # no type: the clip, as the seed
    nothing = seed_fields(player(holstered))
    assert not nothing["found_active"] and "gsi_ammo" not in nothing
    dead = seed_fields(player(ak), dead=True)  # watching another player
    assert dead["gsi_health"] == 0 and not dead["found_active"] and dead["gsi_kills"] == 4


def test_gsi_config_draws_a_random_token_and_checks_the_port(
    tmp_path: Path, capsys, caplog
) -> None:
    tokens = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        assert agent_main(["gsi-config", "--out", str(tmp_path / sub)]) == 0
        cfg = (tmp_path / sub / CFG_NAME).read_text()
        tokens.append(re.search(r'"token" "([^"]+)"', cfg)[1])
    assert tokens[0] != tokens[1] and "csdm" not in tokens and min(map(len, tokens)) >= 16
    printed = capsys.readouterr()
    assert not any(t in printed.out + printed.err + caplog.text for t in tokens)  # never shown
    for port in ("99999", "0"):
        assert agent_main(["gsi-config", "--port", port, "--out", str(tmp_path)]) == 2
        assert f"--port {port}: a port is from 1 to 65535" in caplog.text


def _raw_post(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a hand-made request; the reply's status line (or b"" if the server hung up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        with contextlib.suppress(OSError):
            return s.recv(200).split(b"\r\n")[0]
    return b""


def test_garbage_posts_are_counted_and_dropped_quietly(capfd, caplog) -> None:
    good = _state("t", 2, 1, 0, 100, 30)
    wrong_kind = _state("t", 9, 1, 0, 100, 30)
    wrong_kind["player"]["match_stats"]["kills"] = "9"
    huge_number = (
        json.dumps(_state("t", 1, 1, 0, 100, 30))
        .replace('"kills": 1', '"kills": ' + "9" * 5000)
        .encode()
    )
    deep = b'{"auth": {"token": "t"}, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with GsiListener("127.0.0.1", 0, "t") as gsi:
        _post(gsi.port, good)
        status = _raw_post(
            gsi.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n", b"{}"
        )
        assert status in (b"HTTP/1.0 413 Request Entity Too Large", b"")
        for body in (wrong_kind, huge_number, deep):
            _post(gsi.port, body)
        bad_weapon = _state("t", 9, 1, 0, 100, 30)
        bad_weapon["player"]["weapons"]["weapon_1"]["ammo_clip"] = 10**30
        _post(gsi.port, bad_weapon)
        _post(gsi.port, _state("t", 4, 1, 0, 100, 30))
        out = gsi.summary([], 1.0)
    assert (out["kills"], out["deaths"], out["posts"]) == (2, 0, 2)  # the garbage changed nothing
    assert out["dropped_posts"] == 5 and out["ignored_posts"] == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err
    warnings = [r.getMessage() for r in caplog.records if "GSI" in r.getMessage()]
    assert len(warnings) == 1 and "Content-Length of 1000000000000" in warnings[0]
