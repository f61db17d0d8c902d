"""The report's numbers against the catalog, its HTML in chromium, and the frame viewer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from storage.action_space import KEYS
from storage.dataset import open_dataset
from tasks.report.html import write_report
from tasks.report.numbers import (
    coverage_edges,
    coverage_emd,
    coverage_histogram,
    dataset_report,
    emd_1d,
)
from tasks.report.view import SCALE, write_view
from tests.conftest import process_plain

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _catalog(root: Path) -> pd.DataFrame:
    return open_dataset(root).catalog.to_table().to_pandas()


def test_numbers_match_the_catalog(processed: Path) -> None:
    r = dataset_report(processed)
    files = open_dataset(processed).files.to_pandas()
    cat = _catalog(processed)
    assert r.summary["episodes"] == len(files) == 8
    assert r.summary["kept"] == files.keep.sum() and r.summary["rejected"] == (~files.keep).sum()
    assert r.summary["frames"] == len(cat) == 480
    assert r.summary["hours"] == pytest.approx(480 / 16 / 3600)
    reasons = dict(zip(r.reasons.reason, r.reasons.episodes, strict=True))
    texts = [x if isinstance(x, str) else "" for x in files.reject_reason]
    for c in ("mouse_static", "vel_static", "obs_count"):
        want = sum(f"{c}=" in x and not x.split(f"{c}=")[0].endswith("_") for x in texts)
        assert reasons[c] == want, c
    for d, g in cat.groupby("dataset"):
        row = r.actions.set_index("dataset").loc[d]
        assert row.frames == len(g)
        for k in KEYS:
            assert row[f"key_{k}"] == pytest.approx(g[f"key_{k}"].mean())
        assert row.lclick == pytest.approx(g.lclick.mean())
        assert row.kills_per_min == pytest.approx(g.kill.sum() / (len(g) / 16 / 60))
        mx = r.mouse_x[r.mouse_x.dataset == d].set_index("bin").share
        want_mx = g.mouse_x.value_counts(normalize=True)
        for b, share in want_mx.items():
            assert mx[b] == pytest.approx(share)
        top = r.weapons[r.weapons.dataset == d].iloc[0]
        assert top.share == pytest.approx(g.weapon.value_counts(normalize=True).iloc[0])
        assert len(r.positions[d]) == g.pos_x.notna().sum()


def test_emd_is_the_seeds_measure() -> None:
    u, v = np.array([0.0, 0.1, 0.5, 0.4]), np.array([0.25, 0.25, 0.25, 0.25])
    # independent definition: the integral of |F_u - F_v| over the merged support
    xs = np.sort(np.r_[u, v])
    fu = np.searchsorted(np.sort(u), xs[:-1], side="right") / 4
    fv = np.searchsorted(np.sort(v), xs[:-1], side="right") / 4
    assert emd_1d(u, v) == pytest.approx(np.sum(np.abs(fu - fv) * np.diff(xs)))
    # coverage: the base's grid by hand; a compared point outside it is dropped (as hist2d)
    base = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.2, 0.9]])
    other = np.array([[0.05, 0.05], [0.05, 0.05], [0.9, 0.1], [5.0, 5.0]])
    want = np.zeros((2, 2)), np.zeros((2, 2))
    for arr, h in zip((base, other), want, strict=True):
        for x, y in arr:
            if 0 <= x <= 1 and 0 <= y <= 1:  # edges [0, .5, 1], last bin closed
                h[min(int(x // 0.5), 1), min(int(y // 0.5), 1)] += 1
        h /= h.sum()
    hb, ho = np.sort(want[0].ravel()), np.sort(want[1].ravel())
    xs = np.sort(np.r_[hb, ho])
    cdf_gap = (
        np.abs(
            np.searchsorted(hb, xs[:-1], side="right") - np.searchsorted(ho, xs[:-1], side="right")
        )
        / 4
    )
    assert coverage_emd(base, other, bins=2) == pytest.approx(np.sum(cdf_gap * np.diff(xs)))
    # sorted cell shares [.25, .25, .25, .25] against [0, 0, 1/3, 2/3]: mean gap 0.25
    assert coverage_emd(base, other, bins=2) == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (5000, 2))
    b = rng.normal(3, 1, (5000, 2))
    assert coverage_emd(a, a) == 0
    assert coverage_emd(a, b) > coverage_emd(a, a + rng.normal(0, 0.05, a.shape)) > 0
    h = coverage_histogram(a, coverage_edges(a))
    assert h.shape == (60, 60) and h.sum() == pytest.approx(1)


def test_report_renders_with_its_figures(processed: Path, synth_tree: Path, tmp_path: Path) -> None:
    other = process_plain(synth_tree, tmp_path / "other", test_fraction=0.5)
    made = write_report([processed, other], tmp_path / "report")
    page = made["index"].read_text()
    assert "http://" not in page and "https://" not in page  # viewable offline
    data = json.loads(made["json"].read_text())
    assert [d["summary"]["episodes"] for d in data["datasets"]] == [8, 8]
    emd = made["emd"]
    assert (np.diag(emd.to_numpy()) == 0).all() and emd.shape == (4, 4)
    names = [p.name for p in (tmp_path / "report").glob("*.png")]
    assert len(names) == len(made["figures"]) >= 10
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (make setup)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page_ = browser.new_page(viewport={"width": 1300, "height": 900})
        page_.goto(made["index"].as_uri())
        page_.wait_for_load_state("load")
        widths = page_.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        text = page_.inner_text("body")
        page_.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(widths) == len(made["figures"]) and min(widths) > 0  # every figure loaded
    assert "Map coverage" in text and "Earth mover" in text
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert shot.shape[0] > 2000 and shot.std() > 20  # a long page with figures, not blank


def test_view_draws_the_actions(processed: Path, tmp_path: Path) -> None:
    ds = open_dataset(processed)
    ep = ds.episodes[0]
    cat = _catalog(processed)
    g = cat[cat.episode == ep].sort_values("frame").reset_index(drop=True)
    i = int(np.flatnonzero(g.key_w.to_numpy() != g.key_w.to_numpy()[0])[0])  # w changes here
    png = write_view(processed, ep, tmp_path / "v.png", start=i - 1, count=2)
    img = np.asarray(Image.open(png).convert("RGB"))
    w, h = 280 * SCALE, 150 * SCALE
    assert img.shape == (h, 2 * w, 3)
    box = (8, 64 + 6)  # inside the shipped row's first box ("w")
    lit = [tuple(img[box[0], box[1] + k * w]) == (40, 220, 60) for k in range(2)]
    assert lit == [bool(g.key_w[i - 1]), bool(g.key_w[i])]
    gif = write_view(processed, ep, tmp_path / "v.gif", start=0, count=5)
    with Image.open(gif) as im:
        rgb = np.asarray(im.convert("RGB"))
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    # GIF stores centiseconds: 62.5 ms frames come out as 60s and 70s on every machine
    assert len(durations) == 5 and sum(durations) / 5 == pytest.approx(1000 / 16, abs=2.6)
    # frames are shown in RGB: the stored BGR frame, channel-flipped, below the overlay
    stored = ds.frames(ep, 0, 1)[0][..., ::-1].astype(int)
    assert (
        np.abs(
            rgb[300:420:SCALE, 300:420:SCALE].astype(int).mean((0, 1))
            - stored[100:140, 100:140].mean((0, 1))
        ).max()
        < 25
    )


def test_cli_report_and_view(processed: Path, tmp_path: Path) -> None:
    csdm = str(Path(sys.executable).with_name("csdm"))
    r = subprocess.run(
        [csdm, "report", str(processed), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8 episodes" in r.stdout and (tmp_path / "r" / "index.html").exists()
    bad = subprocess.run(
        [csdm, "view", str(processed), "nope_1", "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "nope_1" in bad.stderr


def test_quality_figure_of_a_dataset_without_stored_episodes(tmp_path: Path) -> None:
    """Every episode failed: nullable counters, no rows; the figure is still drawn."""
    import pandas as pd

    from storage.catalog import COUNTERS
    from tasks.report.figures import quality_figure
    from tasks.report.numbers import DatasetReport

    cols = {c: pd.Series([], dtype="Int64") for c in COUNTERS}
    quality = pd.DataFrame(
        {**cols, "n_frames": pd.Series([], dtype="Int64"), "keep": pd.Series([], dtype="boolean")}
    )
    empty = pd.DataFrame()
    r = DatasetReport(
        "all failed",
        str(tmp_path),
        {},
        empty,
        quality,
        {"dead_skipped": 200},
        1000,
        empty,
        empty,
        empty,
        empty,
    )
    path = quality_figure(r, tmp_path / "q.png")
    assert path.stat().st_size > 10_000
