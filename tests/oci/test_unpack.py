"""Layer extraction refuses what would escape the target, applies whiteouts, and counts bytes."""

from __future__ import annotations

import os

import pytest

from kaito_core.oci import UnsafeArchiveError, VerificationError
from kaito_core.oci.unpack import Budget, extract
from tests.oci.images import M, tar


def _extract(tmp_path, members, *, only="", cap=1 << 30, gz=True):
    archive = tmp_path / "layer.tgz"
    archive.write_bytes(tar(members, gz=gz))
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    extract(archive, root, layer="test layer", budget=Budget(cap, "ref"), only=only)
    return root


@pytest.mark.parametrize("members, needle", [
    ([M("../evil", b"x")], "climbs out with '..'"),
    ([M("data/../../evil", b"x")], "climbs out with '..'"),
    ([M("/etc/evil", b"x")], "absolute path"),
    ([M("data/link", kind="symlink", link="/etc/passwd")], "points to an absolute path"),
    ([M("data/link", kind="symlink", link="../../outside")], "points outside data/"),
    ([M("data/link", kind="symlink", link="../etc")], "points outside data/"),
    ([M("data/hard", kind="hardlink", link="etc/passwd")], "points outside data/"),
    ([M("data/dev", kind="chr")], "device file or FIFO"),
    ([M("data/pipe", kind="fifo")], "device file or FIFO"),
])
def test_hostile_members_are_refused(tmp_path, members, needle):
    with pytest.raises(UnsafeArchiveError, match=needle) as err:
        _extract(tmp_path, [M("data", kind="dir")] + members, only="data")
    assert "test layer" in str(err.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_a_symlink_written_through_cannot_escape(tmp_path):
    """The classic: a symlink to a directory outside, then a file 'inside' it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(UnsafeArchiveError):
        _extract(tmp_path, [M("dir", kind="dir"), M("dir/up", kind="symlink", link=str(outside)),
                            M("dir/up/pwned", b"x")])
    with pytest.raises(UnsafeArchiveError):
        _extract(tmp_path, [M("up", kind="symlink", link="../outside"), M("up/pwned", b"x")])
    assert list(outside.iterdir()) == []


def test_links_inside_the_target_are_kept(tmp_path):
    root = _extract(tmp_path, [M("data", kind="dir"), M("data/a.json", b"{}"),
                               M("data/b.json", kind="symlink", link="a.json"),
                               M("data/c.json", kind="hardlink", link="data/a.json")], only="data")
    assert os.readlink(root / "data/b.json") == "a.json" and (root / "data/c.json").read_bytes() == b"{}"


def test_only_the_data_folder_of_an_image_is_written(tmp_path):
    """A docker-built image's base layers (busybox: absolute symlinks, devices) are skipped, not refused."""
    root = _extract(tmp_path, [M("bin", kind="dir"), M("bin/sh", kind="symlink", link="/bin/busybox"),
                               M("dev/null", kind="chr"), M("data", kind="dir"), M("data/train.jsonl", b"{}\n")],
                    only="data")
    assert sorted(p.name for p in root.iterdir()) == ["data"]
    assert (root / "data/train.jsonl").read_bytes() == b"{}\n"


def test_whiteouts_delete_what_lower_layers_wrote(tmp_path):
    root = _extract(tmp_path, [M("data", kind="dir"), M("data/old.jsonl", b"1"), M("data/keep.jsonl", b"2"),
                               M("data/sub", kind="dir"), M("data/sub/x", b"3")], only="data")
    _extract(tmp_path, [M("data/.wh.old.jsonl"), M("data/sub/.wh..wh..opq"), M("data/sub/y", b"4")], only="data")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == \
        ["data", "data/keep.jsonl", "data/sub", "data/sub/y"]


def test_unpacked_bytes_count_against_the_cap(tmp_path):
    """A gzip bomb: 5 MB of zeros compresses to a few KB; the cap is on what is unpacked."""
    with pytest.raises(VerificationError, match="over the size cap of 1000000 bytes.*KAITO_OCI_MAX_BYTES"):
        _extract(tmp_path, [M("data/zeros", b"\0" * 5_000_000)], only="data", cap=1_000_000)


def test_plain_tar_and_damaged_archives(tmp_path):
    root = _extract(tmp_path, [M("data/x", b"plain")], only="data", gz=False)
    assert (root / "data/x").read_bytes() == b"plain"
    archive = tmp_path / "broken.tgz"
    archive.write_bytes(tar([M("data/x", os.urandom(10000))])[:2000])
    from kaito_core.oci import OCIError

    with pytest.raises(OCIError, match="test layer is a damaged tar archive|is not a tar archive"):
        extract(archive, tmp_path / "root", layer="test layer", budget=Budget(1 << 30, "r"), only="data")


def test_a_whiteout_of_the_whole_data_folder(tmp_path):
    """RUN rm -rf /data && mkdir /data && ...: the upper layer's whiteout names /data itself."""
    root = _extract(tmp_path, [M("data", kind="dir"), M("data/stale.jsonl", b"1")], only="data")
    _extract(tmp_path, [M(".wh.data"), M("data", kind="dir"), M("data/fresh.jsonl", b"2")], only="data")
    assert [p.name for p in (root / "data").iterdir()] == ["fresh.jsonl"]
    _extract(tmp_path, [M(".wh.etc"), M("etc/x", b"ignored")], only="data")  # outside /data: nothing happens
    assert sorted(p.name for p in root.iterdir()) == ["data"]
