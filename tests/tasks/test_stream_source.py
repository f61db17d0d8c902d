"""Archives streamed from a local Hub server into a dataset, verified before anything commits."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from storage.commit import load_state
from storage.containers import MemberRef, iter_container
from storage.dataset import open_dataset
from storage.episode import read_episode
from storage.framestore import ensure_store
from storage.fs import Root
from storage.layout import OutLayout
from tasks.catalog_writer import write_catalog
from tasks.hub.stream import (
    metadata_for,
    prepare_streamed_metadata,
    settle,
    stream_container,
)
from tasks.hub.transfer import HubReader, IngestError, plan_ingest
from tasks.params import ProcessParams
from tests.hostile_archives import lying_tar
from tests.hub_server import FakeHub, Faults, HubServer
from tests.tasks.test_hub import REPO

TAR_A, TAR_B = "hdf5_dm_july2021_1_to_3.tar", "hdf5_dm_july2021_4_to_6.tar"


@pytest.fixture
def hub():
    """A local Hub server: (its FakeHub, its endpoint)."""
    fake = FakeHub()
    with HubServer(fake) as server:
        yield fake, server.endpoint


def _files(tree: Path) -> dict[str, bytes]:
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


def _member_offset(data: bytes, name: str) -> int:
    """Where a member's bytes start inside a tar (to corrupt one mid-episode)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmember(name).offset_data


def _run(plan, out: Root, endpoint: str, paths: list[str]) -> list:
    """Stream `paths` as the flow does: metadata first, then each archive; then the catalog."""
    layout = OutLayout(out)
    ensure_store(layout)
    params = ProcessParams()
    meta, fails = prepare_streamed_metadata(
        plan,
        [f for f in plan.files if f.path.startswith("dataset_metadata/")],
        out,
        params.thresholds(),
        endpoint=endpoint,
    )
    state = load_state(layout)
    results = [
        stream_container(
            plan,
            f,
            out,
            metadata_for(f.path, meta, fails),
            params,
            state.committed,
            endpoint,
            backoff=0.01,
        )
        for f in plan.files
        if f.path in paths
    ]
    write_catalog(
        layout, [r for res in results for r in settle(res, state)], "hub", params.recorded()
    )
    return results


def _local_frames(tree: Path) -> dict[str, np.ndarray]:
    refs = [m for m in iter_container(tree) if isinstance(m, MemberRef)]
    return {
        m.name[5:-5]: read_episode(m, parts=("x",))["x"] for m in refs if m.name.endswith(".hdf5")
    }


def test_a_drop_and_a_503_mid_tar_resume_with_range(synth_tree, hub, tmp_path) -> None:
    files = _files(synth_tree)
    fake, endpoint = hub
    fake.commit(REPO, files)
    fake.faults[TAR_A] = Faults(drop_after=len(files[TAR_A]) // 2, unavailable=1)
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    out = Root(str(tmp_path / "out"))
    results = {
        r.path: r for r in _run(plan, out, endpoint, [TAR_A, TAR_B, "dataset_dm_expert_dust2.zip"])
    }
    assert all(r.verified for r in results.values())
    assert results[TAR_A].resumes == 1 and results[TAR_B].resumes == 0
    ranges = [rng for m, path, rng in fake.requests if m == "GET" and path.endswith(TAR_A)]
    assert ranges[:2] == [None, None]  # the 503, then the transfer that dropped
    assert ranges[2] and 0 < int(ranges[2][6:-1]) <= len(files[TAR_A]) // 2  # resumed there
    ds = open_dataset(out)
    local = _local_frames(synth_tree)
    assert sorted(ds.episodes) == sorted(local)  # every tar and the zip
    for ep, frames in local.items():
        np.testing.assert_array_equal(ds.frames(ep), frames)
    files_table = ds.files.to_pandas().set_index("episode")
    assert files_table.loc["dm_july2021_2", "container"] == f"hf://datasets/{REPO}/{TAR_A}"
    assert (
        files_table.metadata_file.str.startswith(f"hf://datasets/{REPO}/dataset_metadata/")
    ).all()
    assert not list(tmp_path.rglob("*.tar")) and not list(tmp_path.rglob("*.part"))


def test_a_corrupted_tar_commits_nothing_and_a_good_rerun_clears_it(
    synth_tree, hub, tmp_path
) -> None:
    files = _files(synth_tree)
    fake, endpoint = hub
    fake.commit(REPO, files)
    # one byte inside the frames of the tar's last episode: every episode parses, the hash fails
    fake.faults[TAR_B] = Faults(
        corrupt_at=_member_offset(files[TAR_B], "hdf5_dm_july2021_6.hdf5") + 5000
    )
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    out = Root(str(tmp_path / "out"))
    results = {r.path: r for r in _run(plan, out, endpoint, [TAR_A, TAR_B])}
    assert results[TAR_A].verified and not results[TAR_B].verified
    ds = open_dataset(out)
    assert ds.episodes == ["dm_july2021_1", "dm_july2021_2", "dm_july2021_3"]
    assert ds.layout.root.list("frames.zarr") == [*ds.episodes, "zarr.json"]  # none left behind
    failed = ds.files.to_pandas().query("status == 'failed'")
    assert failed.container.tolist() == [f"hf://datasets/{REPO}/{TAR_B}"]
    assert failed.reject_reason.iloc[0].startswith(f"{TAR_B}: checksum mismatch (want ")
    assert "none of its 3 episode(s) read so far were committed" in failed.reject_reason.iloc[0]
    fake.faults.clear()
    results = _run(plan, out, endpoint, [TAR_B])
    assert results[0].verified
    ds = open_dataset(out)
    assert len(ds.episodes) == 6 and (ds.files.to_pandas().status == "stored").all()
    np.testing.assert_array_equal(
        ds.frames("dm_july2021_6"), _local_frames(synth_tree)["dm_july2021_6"]
    )


def test_refused_members_and_a_deflated_zip_stream_safely(synth_tree, hub, tmp_path) -> None:
    files = _files(synth_tree)
    with tarfile.open(fileobj=io.BytesIO(files[TAR_A])) as tf:
        good = tf.extractfile("hdf5_dm_july2021_1.hdf5").read()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        for name, data in (("../x.hdf5", b"evil"), ("hdf5_dm_july2021_1.hdf5", good)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("hdf5_dm_july2021_2.hdf5")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dataset/hdf5_dm_july2021_expert_9.hdf5", good)
        zf.writestr("/abs/hdf5_dm_july2021_expert_8.hdf5", good)
    fake, endpoint = hub
    fake.commit(REPO, {TAR_A: tar.getvalue(), "dataset_dm_expert_dust2.zip": packed.getvalue()})
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    out = Root(str(tmp_path / "out"))
    results = _run(plan, out, endpoint, [TAR_A, "dataset_dm_expert_dust2.zip"])
    assert all(r.verified for r in results)
    ds = open_dataset(out)
    assert ds.episodes == ["dm_july2021_1", "dm_july2021_expert_9"]
    want = read_episode(("good", good), parts=("x",))["x"]
    np.testing.assert_array_equal(ds.frames("dm_july2021_expert_9"), want)
    reasons = " | ".join(ds.files.to_pandas().query("status == 'failed'").reject_reason)
    assert "'../x.hdf5' escapes the archive" in reasons
    assert "'hdf5_dm_july2021_2.hdf5' is a link to '/etc/passwd'; refused" in reasons
    assert "'/abs/hdf5_dm_july2021_expert_8.hdf5' has an absolute path" in reasons


def test_retries_give_up_with_the_file_and_the_byte_reached(hub, tmp_path) -> None:
    fake, endpoint = hub
    fake.commit(REPO, {TAR_A: bytes(range(256)) * 4000})
    fake.faults[TAR_A] = Faults(unavailable=10)
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    slept = []
    reader = HubReader(plan, plan.files[0], endpoint, retries=2, backoff=0.01, sleep=slept.append)
    with reader, pytest.raises(IngestError, match=f"{TAR_A}: .*503.*re-run to retry"):
        reader.read()
    fake.faults[TAR_A] = Faults(drop_after=1000)
    with HubReader(plan, plan.files[0], endpoint, retries=2, backoff=0.5, sleep=slept.append) as r:
        assert len(r.read(2000)) > 0
        r.finish()
    assert slept == [0.5] and r.resumes == 1  # one drop: one backoff, on the injected clock
    # a server that answers the resumption with the whole file: what came before is skipped
    fake.faults[TAR_A] = Faults(drop_after=100_000, ignore_range=True)
    with HubReader(plan, plan.files[0], endpoint, backoff=0.01) as r:
        data = r.read()
        assert r.finish() == plan.files[0].sha256 and r.resumes == 1
    assert data == bytes(range(256)) * 4000


def test_upload_to_a_bucket_is_multipart_resumed_and_never_shows_a_bad_copy(
    synth_tree, hub, bucket, tmp_path
) -> None:
    import fsspec

    from tasks.hub.transfer import ChecksumError, upload_file

    files = _files(synth_tree)
    fake, endpoint = hub
    fake.commit(REPO, files)
    fake.faults[TAR_A] = Faults(drop_after=12 << 20)  # in the third 5 MB part
    fake.faults[TAR_B] = Faults(corrupt_at=len(files[TAR_B]) - 10)  # its last part is wrong
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    by = {f.path: f for f in plan.files}
    url = upload_file(plan, by[TAR_A], f"{bucket}/raw", endpoint, backoff=0.01, part_size=5 << 20)
    s3 = fsspec.filesystem("s3")
    assert url == f"{bucket}/raw/{TAR_A}" and s3.cat_file(url) == files[TAR_A]
    assert s3.info(url)["ETag"].endswith('-5"')  # completed from five 5 MB parts
    ranges = [q[2] for q in fake.requests if q[0] == "GET" and q[1].endswith(TAR_A)]
    assert ranges[0] is None and ranges[1] and int(ranges[1][6:-1]) > 10 << 20  # resumed
    with pytest.raises(ChecksumError, match=f"{TAR_B}: checksum mismatch after 1 retries"):
        upload_file(
            plan, by[TAR_B], f"{bucket}/raw", endpoint, retries=1, backoff=0.01, part_size=5 << 20
        )
    s3.invalidate_cache()
    assert not s3.exists(f"{bucket}/raw/{TAR_B}")
    uploads = s3.call_s3("list_multipart_uploads", Bucket=bucket[5:]).get("Uploads", [])
    assert uploads == []  # every attempt's parts were aborted, none left to bill


def test_a_tar_whose_member_lies_about_its_size_commits_none_of_its_episodes(
    synth_tree, hub, tmp_path
) -> None:
    """A good episode, then a member declaring 10^12 bytes and carrying 1 MB: none committed.

    The Hub's sha256 matches (the damage is in the archive itself); the parse is what fails.
    """
    files = _files(synth_tree)
    with tarfile.open(fileobj=io.BytesIO(files[TAR_A])) as tf:
        good = tf.extractfile("hdf5_dm_july2021_1.hdf5").read()
    liar = lying_tar(
        [("hdf5_dm_july2021_1.hdf5", good)], "hdf5_dm_july2021_2.hdf5", 10**12, 1 << 20
    )
    fake, endpoint = hub
    fake.commit(REPO, {**{k: v for k, v in files.items() if k != TAR_A}, TAR_A: liar})
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    out = Root(str(tmp_path / "out"))
    for attempt in range(2):  # streamed again (as --retry-defects would): the same verdict
        results = {r.path: r for r in _run(plan, out, endpoint, [TAR_A, TAR_B])}
        assert not results[TAR_A].verified and results[TAR_B].verified, attempt
        ds = open_dataset(out)
        assert ds.episodes == ["dm_july2021_4", "dm_july2021_5", "dm_july2021_6"]
        assert "dm_july2021_1" not in ds.layout.root.list("frames.zarr")  # its frames withdrawn
        assert set(ds.catalog.to_table(["episode"]).column("episode").to_pylist()) == {
            "dm_july2021_4",
            "dm_july2021_5",
            "dm_july2021_6",
        }
        # the Hub's sha256 matched: the archive is the publisher's, a source defect
        assert ds.files.to_pandas().query("status == 'failed'").empty
        failed = ds.files.to_pandas().query("status == 'defect'")
        assert failed.container.tolist() == [f"hf://datasets/{REPO}/{TAR_A}"]
        why = failed.reject_reason.iloc[0]
        assert why.startswith(
            f"hf://datasets/{REPO}/{TAR_A}: unreadable tar in or after member "
            "'hdf5_dm_july2021_2.hdf5'"
        )
        assert "none of its 1 episode(s) read so far were committed" in why and "\n" not in why
        assert "source defect, recorded once and not retried" in why


def test_odd_member_names_are_failures_with_the_reason(synth_tree, hub, tmp_path) -> None:
    files = _files(synth_tree)
    with tarfile.open(fileobj=io.BytesIO(files[TAR_A])) as tf:
        good = tf.extractfile("hdf5_dm_july2021_1.hdf5").read()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in (
            "hdf5_dm_july2021_1.hdf5",
            "hdf5_dm_july2021_\n2.hdf5",
            "hdf5_dm_july2021_é3.hdf5",
            "README.md",
        ):
            info = tarfile.TarInfo(name)
            info.size = len(good)
            tf.addfile(info, io.BytesIO(good))
    fake, endpoint = hub
    fake.commit(REPO, {TAR_A: tar.getvalue()})
    plan = plan_ingest(REPO, "main", [], endpoint=endpoint)
    out = Root(str(tmp_path / "out"))
    (res,) = _run(plan, out, endpoint, [TAR_A])
    assert res.verified
    ds = open_dataset(out)
    assert ds.episodes == ["dm_july2021_1"]
    failed = ds.files.to_pandas().query("status == 'failed'").sort_values("member")
    assert failed.member.tolist() == ["hdf5_dm_july2021_\n2.hdf5", "hdf5_dm_july2021_é3.hdf5"]
    for why in failed.reject_reason:
        assert why.startswith(f"hf://datasets/{REPO}/{TAR_A}: name ") and "\n" not in why
        assert why.endswith("holds control or non-ASCII characters; not an episode name; skipped")
