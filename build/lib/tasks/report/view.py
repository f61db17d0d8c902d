"""`csdm view`: an episode's frames in RGB with the shipped and inferred actions drawn on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from storage.action_space import FPS, KEYS
from storage.catalog import KEY_COLUMNS
from storage.dataset import connect_catalog, open_dataset

SHIPPED, INFERRED = (40, 220, 60), (60, 160, 255)
SCALE = 3  # 280x150 frames drawn at 840x450
MOUSE_PX = 0.25  # arrow pixels per mouse unit (bins reach +-1000)


def _labels(root: str | Path, episode: str, start: int, stop: int) -> list[dict]:
    con = connect_catalog(root)
    cols = ", ".join(KEY_COLUMNS)
    return (
        con.sql(
            f"SELECT frame, {cols}, lclick, rclick, mouse_x, mouse_y, infer_keys, "
            "infer_mouse_x, infer_mouse_y, infer_lclick, infer_rclick FROM frames "
            "WHERE episode = ? AND frame >= ? AND frame < ? ORDER BY frame",
            params=[episode, start, stop],
        )
        .df()
        .to_dict(orient="records")
    )


def _row(
    draw: ImageDraw.ImageDraw,
    y: int,
    name: str,
    keys: set[str],
    clicks: tuple[bool, bool],
    colour: tuple[int, int, int],
) -> None:
    draw.text((6, y + 3), name, fill=(255, 255, 255))
    x = 64
    for k in [*KEYS, "L", "R"]:
        on = k in keys if k not in ("L", "R") else clicks[k == "R"]
        w = 14 + 6 * len(k)
        draw.rectangle([x, y, x + w, y + 16], outline=colour, fill=colour if on else None)
        draw.text((x + 4, y + 3), k, fill=(0, 0, 0) if on else (255, 255, 255))
        x += w + 4


def _arrow(
    draw: ImageDraw.ImageDraw,
    c: tuple[int, int],
    dx: float,
    dy: float,
    colour: tuple[int, int, int],
) -> None:
    end = (c[0] + dx * MOUSE_PX * SCALE, c[1] + dy * MOUSE_PX * SCALE)
    draw.line([c, end], fill=colour, width=3)
    draw.ellipse([end[0] - 4, end[1] - 4, end[0] + 4, end[1] + 4], fill=colour)


def render(root: str | Path, episode: str, start: int = 0, count: int = 1) -> list[Image.Image]:
    """Frames `[start, start+count)` of an episode, converted to RGB, actions drawn."""
    ds = open_dataset(root)
    n = ds.n_frames(episode)
    if not 0 <= start < n:
        raise ValueError(f"{episode}: start {start} outside its {n} frames (0-{n - 1})")
    if start + count > n:
        raise ValueError(
            f"{episode}: frames {start}-{start + count - 1} run past its last frame {n - 1}; "
            f"use --count {n - start} or less, or an earlier --start"
        )
    stop = start + count
    frames = ds.frames(episode, start, stop)[..., ::-1]  # stored BGR -> RGB
    out = []
    for f, lab in zip(frames, _labels(ds, episode, start, stop), strict=True):
        img = Image.fromarray(np.ascontiguousarray(f)).resize(
            (f.shape[1] * SCALE, f.shape[0] * SCALE), Image.Resampling.BILINEAR
        )
        d = ImageDraw.Draw(img)
        d.rectangle([0, 0, img.width, 46], fill=(0, 0, 0))
        shipped = {k for k, c in zip(KEYS, KEY_COLUMNS, strict=True) if lab[c]}
        _row(d, 4, "shipped", shipped, (bool(lab["lclick"]), bool(lab["rclick"])), SHIPPED)
        centre = (img.width // 2, img.height // 2)
        has_inferred = lab["infer_keys"] is not None and not (
            isinstance(lab["infer_mouse_x"], float) and np.isnan(lab["infer_mouse_x"])
        )
        if has_inferred:
            inferred = set(lab["infer_keys"])
            _row(
                d,
                25,
                "inferred",
                inferred,
                (bool(lab["infer_lclick"]), bool(lab["infer_rclick"])),
                INFERRED,
            )
            _arrow(d, centre, lab["infer_mouse_x"], lab["infer_mouse_y"], INFERRED)
        else:
            d.text((6, 28), "inferred: no metadata", fill=(200, 200, 200))
        _arrow(d, centre, lab["mouse_x"], lab["mouse_y"], SHIPPED)
        d.text((6, img.height - 16), f"{episode} frame {lab['frame']}", fill=(255, 255, 255))
        out.append(img)
    return out


def write_view(
    root: str | Path,
    episode: str,
    out: str | Path,
    start: int = 0,
    count: int = 1,
    columns: int = 4,
) -> Path:
    """A PNG (one frame, or a grid of `count`) or an animated GIF at the dataset's 16 fps."""
    out = Path(out)
    images = render(root, episode, start, count)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        # GIF delays are in 10 ms steps: alternate them so the average rate is exactly FPS
        ends = [round(100 * (i + 1) / FPS) * 10 for i in range(len(images))]
        durations = np.diff([0, *ends]).tolist()
        images[0].save(out, save_all=True, append_images=images[1:], duration=durations, loop=0)
    elif out.suffix.lower() == ".png":
        cols = min(columns, len(images))
        rows = -(-len(images) // cols)
        w, h = images[0].size
        sheet = Image.new("RGB", (cols * w, rows * h))
        for i, im in enumerate(images):
            sheet.paste(im, ((i % cols) * w, (i // cols) * h))
        sheet.save(out)
    else:
        raise ValueError(f"{out}: write .png or .gif")
    return out
