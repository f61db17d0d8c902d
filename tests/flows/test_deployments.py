"""`make serve`'s script, then deployments run by a worker: through the API and from the UI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from storage.dataset import open_dataset
from tests.hub_server import FakeHub, HubServer
from tests.tasks.test_hub import REPO

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(synth_tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """Server, work pool, deployments and worker as `make serve` makes them; a local hub."""
    tmp = tmp_path_factory.mktemp("serve")
    shutil.copytree(synth_tree, tmp / "data" / "hub")  # what `process` finds by default
    files = {
        str(p.relative_to(synth_tree)): p.read_bytes() for p in synth_tree.rglob("*") if p.is_file()
    }
    fake = FakeHub()
    fake.commit(REPO, files)
    port = _port()
    with HubServer(fake) as hub:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "PREFECT_PORT": str(port),
            "CSDM_STATE": str(tmp / "state"),
            "PREFECT_HOME": str(tmp / "home"),
            "HF_ENDPOINT": hub.endpoint,
            "CSDM_DATA": str(tmp / "data"),
        }
        try:
            r = subprocess.run(
                [str(ROOT / "infra/serve.sh")], env=env, capture_output=True, text=True, timeout=300
            )
            assert r.returncode == 0, r.stdout + r.stderr
            api = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
            yield api, port, tmp, fake
        finally:
            subprocess.run([str(ROOT / "infra/stop.sh")], env=env, timeout=120)


def test_pipeline_deployment_through_the_api(served) -> None:
    api, _, tmp, fake = served
    listed = subprocess.run(
        [PREFECT, "deployment", "ls"], env=api, capture_output=True, text=True, timeout=120
    ).stdout
    for name in (
        "ingest/ingest",
        "process/process",
        "pipeline/pipeline",
        "pipeline/daily-refresh",
        "train/train",
        "eval/eval",
    ):
        assert name in listed
    # the daily refresh streams by default: nothing of the Hub's lands in the data folder
    out = tmp / "pipeline-out"
    params = {"out": str(out), "include": ["*"], "workers": 1}
    r = subprocess.run(
        [
            PREFECT,
            "deployment",
            "run",
            "pipeline/daily-refresh",
            "--params",
            json.dumps(params),
            "--watch",
            "--watch-timeout",
            "400",
        ],
        env=api,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert "Completed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    ds = open_dataset(out)
    assert len(ds.episodes) == 8
    assert ds.manifest.revision == fake.branches[REPO]["main"]
    assert ds.files.to_pandas().container.str.startswith(f"hf://datasets/{REPO}/").all()
    copies = [
        p
        for p in tmp.rglob("*")
        if p.suffix in (".tar", ".zip", ".part") and tmp / "data" / "hub" not in p.parents
    ]
    assert not copies


def _process_run(port: int) -> str | None:
    """The id of the `process` deployment's newest flow run, through the API."""
    body = json.dumps(
        {
            "deployments": {"name": {"any_": ["process"]}},
            "limit": 1,
            "sort": "EXPECTED_START_TIME_DESC",
        }
    ).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/flow_runs/filter",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        runs = json.load(r)
    return runs[0]["id"] if runs else None


FINAL = {"Completed", "Failed", "Crashed", "Cancelled"}


def _state(port: int, run_id: str) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/flow_runs/{run_id}", timeout=30) as r:
        return json.load(r)["state_name"]


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium not installed (make setup)"
)
def test_run_the_process_deployment_from_the_ui(served, tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    _, port, tmp, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/deployments")
        for name in ("ingest", "process", "pipeline", "daily-refresh"):
            page.get_by_role("link", name=name, exact=True).first.wait_for(timeout=30_000)
        page.get_by_role("link", name="process", exact=True).first.click()
        run_id = None
        for _ in range(3):  # a click that lands before the page has settled is lost: retry
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Quick run", exact=True).click()
            page.get_by_role("dialog").get_by_role("button", name="Run", exact=True).click()
            deadline = time.monotonic() + 30
            while run_id is None and time.monotonic() < deadline:
                page.wait_for_timeout(1000)
                run_id = _process_run(port)
            if run_id is not None:
                break
            page.reload()
        assert run_id is not None, "the UI's Run did not create a flow run"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and _state(port, run_id) not in FINAL:
            time.sleep(3)
        page.goto(f"http://127.0.0.1:{port}/runs/flow-run/{run_id}")
        page.get_by_text(_state(port, run_id) or "?", exact=True).first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "deployment.png"))
        assert "Completed" in body, body[-2000:]
        assert len(open_dataset(tmp / "data" / "csdm").episodes) == 8  # the deployment's defaults

        # A custom run: every option is a described field, filled with its default, and editable
        page.goto(f"http://127.0.0.1:{port}/deployments")
        page.get_by_role("link", name="process", exact=True).first.click()
        label = page.get_by_text("Test Fraction (Optional)", exact=True)
        for attempt in range(3):  # as above: a click before the page has settled is lost
            try:
                page.get_by_role("button", name="Run", exact=True).click()
                page.get_by_text("Custom run", exact=True).click(timeout=20_000)
                label.wait_for(timeout=30_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
                page.reload()
        page.get_by_text("Share of episodes put in the test split (0 to 1).").wait_for()
        field = label.locator("xpath=following::input[1]")
        assert field.input_value() == "0"
        assert (
            page.get_by_text("Per Frames (Optional)", exact=True)
            .locator("xpath=following::input[1]")
            .input_value()
            == "1000"
        )
        field.fill("0.5")
        page.get_by_text("out", exact=True).locator("xpath=following::textarea[1]").fill(
            str(tmp / "data" / "custom")
        )
        page.get_by_role("button", name="Submit").click()
        custom = None
        deadline = time.monotonic() + 180  # a wait, not a timing: the machine may be busy
        while custom in (None, run_id) and time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            custom = _process_run(port)
        assert custom not in (None, run_id), "the custom run was not created"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and _state(port, custom) not in FINAL:
            time.sleep(3)
        browser.close()
    assert _state(port, custom) == "Completed"
    manifest = open_dataset(tmp / "data" / "custom").manifest
    assert manifest.parameters["test_fraction"] == 0.5
