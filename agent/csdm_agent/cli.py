"""`csdm-agent pull` and `csdm-agent run`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from pathlib import Path

from csdm_agent.artifact import Artifact, VerificationError
from csdm_agent.capture import ReplayError
from csdm_agent.control import SCAN_CODES

SUMMARY_FORMAT = 1  # format_version of the JSON that --summary writes

log = logging.getLogger("csdm_agent")
# Virtual-key codes for --stop-key.
VK = {**{f"F{i}": 0x6F + i for i in range(1, 13)}, "END": 0x23, "PAUSE": 0x13}


def _pull(args: argparse.Namespace) -> int:
    from csdm_agent.pull import pull

    art = pull(args.registry, args.name, args.dest, args.version, args.alias)
    d = art.descriptor
    print(
        f"{art.folder}  ({args.name}, step {d['training']['step']}, "
        f"{d['files'][d['model']]['size'] / 1e6:.1f} MB, verified)"
    )
    print(f"play it: csdm-agent run --model {art.folder}")
    return 0


def _model_folder(args: argparse.Namespace) -> Path:
    """--model as a folder: a pull destination, or NAME@alias / NAME@vN pulled from --registry."""
    from csdm_agent.pull import find_model, pull

    spec = args.model
    if "@" in spec and not Path(spec).exists():
        if not args.registry:
            raise VerificationError(f"--model {spec}: a registered model needs --registry REG")
        name, _, ref = spec.partition("@")
        version = int(ref[1:]) if ref[:1] == "v" and ref[1:].isdigit() else None
        alias = None if version is not None else ref
        return pull(args.registry, name, args.dest, version, alias).folder
    return find_model(spec)


def _gsi_config(args: argparse.Namespace) -> int:
    import secrets

    from csdm_agent.gsi import CFG_NAME, config_text

    out = Path(args.out) / CFG_NAME
    out.write_text(config_text(args.port, args.token or secrets.token_urlsafe(12), args.host))
    print(
        f"wrote {out}: copy it into the game's cfg folder (...\\Counter-Strike Global "
        "Offensive\\csgo\\cfg) and restart the game"
    )
    print(
        f"then: csdm-agent run --model MODEL --gsi {args.host}:{args.port} --gsi-token "
        "<the token in the file> --summary run.json"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from csdm_agent.capture import Crop, Preprocess, ReplayFrames
    from csdm_agent.control import Controller, RecordingSink, SendInputSink, stop_key_pressed
    from csdm_agent.decode import Decoder
    from csdm_agent.loop import run
    from csdm_agent.policy import Policy

    gsi_at = None
    if args.gsi or args.gsi_token:  # checked before anything starts
        from csdm_agent.gsi import parse_address

        if not (args.gsi and args.gsi_token):
            raise VerificationError(
                "--gsi HOST:PORT and --gsi-token T go together: the "
                "address and token of the game's GSI cfg (csdm-agent "
                "gsi-config)"
            )
        gsi_at = parse_address(args.gsi)
    art = Artifact.open(_model_folder(args))
    d = art.descriptor
    space = d["action_space"]
    policy = Policy(art, threads=args.threads)
    decoder = Decoder.from_descriptor(d, decode_options(args), args.seed)
    out_hw = (space["height"], space["width"])
    if args.replay:
        frames = ReplayFrames(args.replay, expect=out_hw)
    else:
        frames = _screen(Preprocess(Crop(**space["crop"]), out_hw), args)
    sink = RecordingSink() if args.dry_run else SendInputSink()
    vk = VK[args.stop_key.upper()]
    log.info(
        "playing %s at %d fps%s; stop with %s or Ctrl+C",
        art.folder,
        space["fps"],
        " (dry run: no input sent)" if args.dry_run else "",
        args.stop_key,
    )
    decals = (args.clear_decals_key, args.clear_decals_every)
    with contextlib.ExitStack() as stack:
        listener = None
        if gsi_at:
            from csdm_agent.gsi import GsiListener

            listener = stack.enter_context(GsiListener(*gsi_at, args.gsi_token))
        summary = run(
            policy,
            decoder,
            frames,
            Controller(sink),
            space["fps"],
            args.max_frames,
            stop=lambda: stop_key_pressed(vk),
            clear_decals=decals,
            gsi=listener.snapshot if listener else None,
        )
    # the loop's fixed grid: steps plus the slots lost to overruns are the time played
    played = (len(summary.step) + summary.dropped) / space["fps"] / 60
    gsi = listener.summary(summary.gsi, played) if listener else None
    print(summary.report())
    if gsi is not None and gsi["posts"] == 0:
        log.warning(
            "GSI: no post from the game%s",
            " with this token: --gsi-token differs from the cfg's"
            if gsi["ignored_posts"]
            else ": is the cfg in csgo\\cfg, was the "
            "game restarted after copying it, and do the ports match?",
        )
    elif gsi is not None:
        print(
            f"GSI: {gsi['kills']} kills, {gsi['deaths']} deaths, {gsi['assists']} assists in "
            f"{gsi['minutes']:.2f} min (kills/min {gsi['kills_per_min']}, K/D {gsi['kd']}); "
            f"{gsi['posts']} posts, {gsi['ignored_posts']} ignored, {gsi['dropped_posts']} "
            "malformed"
        )
    if args.summary:
        Path(args.summary).write_text(
            json.dumps(
                {
                    "format_version": SUMMARY_FORMAT,
                    "kind": "csdm-agent run",
                    "steps": len(summary.step),
                    "fps": summary.fps,
                    "provider": summary.provider,
                    "overruns": summary.overruns,
                    "dropped": summary.dropped,
                    "released": summary.released,
                    "stopped_by": summary.stopped_by,
                    "decals_cleared": summary.decals_cleared,
                    **({"gsi": gsi} if gsi is not None else {}),
                    "decode": dataclasses.asdict(decoder.options),
                    **summary.percentiles(),
                    "actions": [
                        {
                            "keys": sorted(a.keys),
                            "lclick": a.lclick,
                            "rclick": a.rclick,
                            "mouse_x": a.mouse_x,
                            "mouse_y": a.mouse_y,
                        }
                        for a in summary.actions
                    ],
                    "events": len(sink.events) if args.dry_run else None,
                },
                indent=1,
            )
        )
    return 0


def _record(args: argparse.Namespace) -> int:
    from csdm_agent.capture import Crop, Preprocess
    from csdm_agent.control import stop_key_pressed
    from csdm_agent.gsi import GsiListener, parse_address
    from csdm_agent.inputs import WindowsInput
    from csdm_agent.record import FRAME_SHAPE, SEED_CROP, EpisodeWriter, record

    if args.sensitivity <= 0:
        raise ValueError(f"--sensitivity {args.sensitivity}: the game's sensitivity is > 0")
    if args.episode_frames < 1:
        raise ValueError(f"--episode-frames {args.episode_frames}: at least 1")
    host, port = parse_address(args.gsi)
    writer = EpisodeWriter(Path(args.out), args.stub)
    frames = _screen(Preprocess(Crop(**SEED_CROP), FRAME_SHAPE[:2]), args)
    vk = VK[args.stop_key.upper()]
    with GsiListener(host, port, args.gsi_token) as listener:
        log.info(
            "recording to %s from hdf5_%s%d.hdf5 at 16 fps; stop with %s or Ctrl+C",
            args.out,
            args.stub,
            writer.next,
            args.stop_key,
        )
        summary = record(
            frames,
            WindowsInput(),
            listener.seed_state,
            writer,
            args.sensitivity,
            args.episode_frames,
            args.keep_partial,
            stop=lambda: stop_key_pressed(vk),
            max_frames=args.max_frames,
        )
    return _report_recording(summary, args)


def _screen(pre, args: argparse.Namespace):
    """The game window's capture, found by `--window-title` when given."""
    from csdm_agent.capture import ScreenCapture

    return ScreenCapture(pre, tuple(args.window_title)) if args.window_title else ScreenCapture(pre)


def _capture_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """The window, stop and length options `run` and `record` share."""
    p.add_argument("--max-frames", type=int)
    p.add_argument("--window-title", action="append", help="game window title (repeatable)")
    p.add_argument(
        "--stop-key",
        default="END",
        choices=sorted(VK, key=len),
        help=f"held-down key that stops {what} (F keys are often bound in game)",
    )


def _report_recording(summary, args: argparse.Namespace) -> int:
    print(
        f"{len(summary.episodes)} episodes, {summary.frames} frames written to {args.out}; "
        f"stopped by {summary.stopped_by}; {summary.dropped} slots dropped"
    )
    if summary.discarded:
        print(
            f"discarded the unfinished last episode ({summary.discarded} frames); "
            "--keep-partial writes it shorter"
        )
    if summary.episodes:
        print(f"bring them into the pipeline: csdm process {args.out} OUT")
    if args.summary:
        Path(args.summary).write_text(
            json.dumps(
                {
                    "format_version": SUMMARY_FORMAT,
                    "kind": "csdm-agent record",
                    **dataclasses.asdict(summary),
                },
                indent=1,
            )
        )
    return 1 if summary.failures else 0


# every DecodeOptions field is a flag; the help says what the seed did
DECODE_HELP = {
    "clicks": "press the left click when sampled (seed IS_CLICKS: on)",
    "rclick": "press the right click (seed IS_RCLICK: off)",
    "mouse": "move the mouse (seed IS_MOUSEMOVE: on)",
    "wasd": "hold movement keys (seed IS_WASD: on)",
    "jump": "jump when sampled (seed IS_JUMP: on)",
    "reload": "reload when sampled (seed IS_RELOAD: on)",
    "other_keys": "ctrl, shift, 1, 2, 3 as predicted (seed IS_KEYS: off)",
    "jump_boost": "multiply the jump probability; the seed used 5 for models named *expert*",
    "reset_chance": "chance per step of zeroing the recurrent state (seed: 0.001)",
    "mouse_x_clip": "largest horizontal move per step (seed: 300)",
}


def _decode_arguments(p: argparse.ArgumentParser) -> None:
    from csdm_agent.decode import DecodeOptions

    g = p.add_argument_group("decoding (the seed's dm_run_agent.py switches)")
    for f in dataclasses.fields(DecodeOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            g.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=DECODE_HELP[f.name],
            )
        else:
            g.add_argument(flag, type=float, default=f.default, help=DECODE_HELP[f.name])


def decode_options(args: argparse.Namespace):
    """The DecodeOptions the command line asked for."""
    from csdm_agent.decode import DecodeOptions

    return DecodeOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(DecodeOptions)}
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `csdm-agent` command."""
    ap = argparse.ArgumentParser(prog="csdm-agent", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pull", help="copy or download a registered model, verified")
    p.add_argument("--registry", required=True, help="registry folder or hf://owner/repo")
    p.add_argument("--name", required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--version", type=int, help="a version number (default: the latest)")
    g.add_argument("--alias", help="an alias such as production")
    p.add_argument("--dest", required=True, help="models folder; versions kept side by side")
    r = sub.add_parser("run", help="play with a pulled model")
    r.add_argument(
        "--model",
        required=True,
        help="a pulled model: DEST, DEST/NAME (its newest version) or DEST/NAME/vN; "
        "or NAME@alias / NAME@vN with --registry (pulled into --dest first)",
    )
    r.add_argument("--registry", help="registry folder or hf://owner/repo, for --model NAME@alias")
    r.add_argument("--dest", default="models", help="where --model NAME@alias is pulled to")
    r.add_argument(
        "--gsi",
        metavar="HOST:PORT",
        help="listen for the game's state (GSI) and report kills and deaths per minute",
    )
    r.add_argument(
        "--gsi-token", help="the auth token of the game's GSI cfg; other posts are ignored"
    )
    r.add_argument("--dry-run", action="store_true", help="decide actions, send no input")
    r.add_argument("--replay", help="an episode .hdf5 (or .npy frames) instead of the screen")
    _capture_arguments(r, "the agent")
    r.add_argument("--seed", type=int, help="seed of the action sampling")
    r.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    r.add_argument(
        "--clear-decals-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="tap the clear-decals key this often, as the seed did (0: never)",
    )
    r.add_argument(
        "--clear-decals-key",
        default="n",
        choices=sorted(SCAN_CODES),
        help="the key bound to r_cleardecals in the game (seed: n)",
    )
    _decode_arguments(r)
    r.add_argument("--summary", help="write the run summary and actions as JSON here")
    rec = sub.add_parser("record", help="record your own play as dataset episodes (Windows)")
    rec.add_argument("--out", required=True, help="folder for hdf5_{stub}{n}.hdf5 episodes")
    rec.add_argument("--stub", default="dm_mine_", help="episode name stub, ending in '_'")
    rec.add_argument(
        "--gsi",
        default="127.0.0.1:3000",
        metavar="HOST:PORT",
        help="where the game's GSI cfg posts (csdm-agent gsi-config)",
    )
    rec.add_argument("--gsi-token", required=True, help="the auth token of the game's GSI cfg")
    rec.add_argument(
        "--sensitivity",
        type=float,
        default=2.5,
        help="your in-game sensitivity: mouse counts x this / 2.5 are the seed's units",
    )
    rec.add_argument(
        "--episode-frames",
        type=int,
        default=1000,
        help="frames per episode file (the public files: 1000)",
    )
    rec.add_argument(
        "--keep-partial",
        action="store_true",
        help="on stop, write the unfinished last episode shorter (default: discard)",
    )
    _capture_arguments(rec, "recording")
    rec.add_argument("--summary", help="write what was recorded as JSON here")
    c = sub.add_parser("gsi-config", help="write the game's GSI cfg for run --gsi")
    c.add_argument("--port", type=int, default=3000)
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument(
        "--token",
        help="filters posts; the same goes to run --gsi-token "
        "(default: a random one, written only to the file)",
    )
    c.add_argument("--out", default=".", help="folder to write gamestate_integration_csdm.cfg in")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        commands = {"pull": _pull, "run": _run, "record": _record, "gsi-config": _gsi_config}
        return commands[args.command](args)
    except (VerificationError, ReplayError, ValueError, OSError) as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
