"""`debvisor hv convert`: results checked with qemu-img compare/info and checksums of the raw bytes
computed here independently (blake3 and sha256 of raw exports, and sha256-tree as MEDIA.md defines
it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import blake3
import pytest

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-nbd")),
                                reason="qemu-utils (qemu-img, qemu-nbd) is not installed")
MiB = 1 << 20


def make_raw(path: Path, size: int, seed: int = 1) -> str:
    """A sparse raw image: random data, a hole, text, zeros written out; returns its sha256."""
    rnd = hashlib.sha256(str(seed).encode()).digest()
    with open(path, "wb") as f:
        f.truncate(size)
        pos = 0
        while pos < size:
            block = os.urandom(min(3 * MiB, size - pos))
            f.seek(pos)
            f.write(block)
            pos += 5 * MiB  # leaves 2 MiB holes between data
        f.seek(size - 4096)
        f.write(rnd * 128)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: Path, size: int) -> str:
    """sha256-tree as documented: sha256 over the sha256 of each 1 MiB block of the raw bytes."""
    outer = hashlib.sha256()
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            block = f.read(min(MiB, size - pos))
            outer.update(hashlib.sha256(block).digest())
            pos += len(block)
    return outer.hexdigest()


def blake3_file(path: Path, size: int | None = None) -> str:
    """BLAKE3 of the first ``size`` bytes of a file (all of it by default), like `b3sum`."""
    h = blake3.blake3()
    left = path.stat().st_size if size is None else size
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(min(8 * MiB, left))):
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def raw_export_blake3(image: Path, tmp: Path) -> str:
    """BLAKE3 over `qemu-img convert -O raw IMAGE` (an independent export of the guest bytes)."""
    raw = tmp / f"{image.name}.export.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    try:
        return blake3_file(raw)
    finally:
        raw.unlink()


def qemu_info(path: Path) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True,
                                     check=True, text=True).stdout)


def identical(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)]).returncode == 0


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def src_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("conv")
    src = d / "src.raw"
    return src, make_raw(src, 40 * MiB + 64 * 1024)


@pytest.mark.parametrize("cache", ["writeback", "none"])
def test_raw_to_qcow2_verified(dv, tmp_path: Path, src_image: tuple[Path, str], cache: str) -> None:
    src, digest = src_image
    dst = tmp_path / "out.qcow2"
    res = dv("hv", "convert", src, dst, "-O", "qcow2", "--json", "--segment", "8", "--cache", cache,
             "--checksum", "sha256-tree")
    assert res.code == 0, res
    tree = tree_digest(src, src.stat().st_size)
    assert res.json["checksum"] == "sha256-tree" and res.json["sha256-tree"] == tree
    assert res.json["source_format"] == "raw"
    assert qemu_info(dst)["format"] == "qcow2"
    assert identical(src, dst)
    assert tree in (tmp_path / "out.qcow2.sha256-tree").read_text()
    assert leftovers(tmp_path) == []
    plain = dv("hv", "convert", src, tmp_path / "plain.qcow2", "--checksum", "sha256", "--json")
    assert plain.code == 0, plain
    assert plain.json["sha256"] == digest and digest in (tmp_path / "plain.qcow2.sha256").read_text()
    again = dv("hv", "convert", src, dst, "-O", "qcow2")
    assert again.code == 2 and "--force" in again.stderr


def test_a_checkpoint_write_cut_by_sigkill_leaves_nothing_behind(dv, tmp_path: Path,
                                                                 src_image: tuple[Path, str]) -> None:
    # What a SIGKILL between the temporary file and its rename leaves (seen on CI): the
    # finished conversion removes it with the state file.
    src, _ = src_image
    dst = tmp_path / "out.qcow2"
    (tmp_path / "..out.qcow2.convert-state.json.k29zj2ue.tmp").write_text("{")
    res = dv("hv", "convert", src, dst, "-O", "qcow2")
    assert res.code == 0, res
    assert leftovers(tmp_path) == []


def test_blake3_default_matches_raw_export(dv, tmp_path: Path, src_image: tuple[Path, str]) -> None:
    """The default checksum is plain BLAKE3 of the guest bytes: b3sum of a raw export."""
    src, _ = src_image
    dst = tmp_path / "out.qcow2"
    res = dv("hv", "convert", src, dst, "-O", "qcow2", "--json", "--segment", "8")
    assert res.code == 0, res
    want = raw_export_blake3(dst, tmp_path)
    assert want == blake3_file(src)
    assert res.json["checksum"] == "blake3" and res.json["blake3"] == want
    stored = (tmp_path / "out.qcow2.blake3").read_text()
    assert f"{want}  out.qcow2" in stored and "b3sum" in stored
    assert not (tmp_path / "out.qcow2.sha256-tree").exists()
    # a qcow2 source and a vmdk result (read back through qemu-nbd), a size that is no block multiple
    odd = tmp_path / "odd.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(odd), str(7 * MiB + 512)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M",
                    "-c", f"write -P 0x11 {7 * MiB} 512", str(odd)], check=True, capture_output=True)
    vmdk = tmp_path / "odd.vmdk"
    res = dv("hv", "convert", odd, vmdk, "-O", "vmdk", "--json", "--segment", "2")
    assert res.code == 0, res
    want = raw_export_blake3(odd, tmp_path)
    assert res.json["blake3"] == want == raw_export_blake3(vmdk, tmp_path)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt,extra", [("vmdk", []), ("vdi", []), ("vhdx", []), ("qcow2", ["--compress"])])
def test_formats_and_detected_source(dv, tmp_path: Path, src_image: tuple[Path, str], fmt: str,
                                     extra: list[str]) -> None:
    src, digest = src_image
    mid = tmp_path / f"mid.{fmt}"
    res = dv("hv", "convert", src, mid, "-O", fmt, *extra, "--json")
    assert res.code == 0, res
    assert qemu_info(mid)["format"] == fmt and identical(src, mid)
    if extra:  # compressible data takes far less room than in the source
        text = tmp_path / "text.raw"
        text.write_bytes(b"DebVisor compressible line of text\n" * (8 * MiB // 35))
        packed = tmp_path / "text.qcow2"
        assert dv("hv", "convert", text, packed, "-O", "qcow2", "--compress").code == 0
        assert qemu_info(packed)["actual-size"] < text.stat().st_size // 4 and identical(text, packed)
    back = tmp_path / "back.raw"  # the format of `mid` is detected, not given
    res = dv("hv", "convert", mid, back, "-O", "raw", "--json", "--checksum", "sha256")
    assert res.code == 0, res
    assert res.json["source_format"] == fmt and res.json["sha256"] == digest
    with open(back, "rb") as f:
        assert hashlib.sha256(f.read(src.stat().st_size)).hexdigest() == digest


def test_bad_input_is_refused_before_work(dv, tmp_path: Path, src_image: tuple[Path, str]) -> None:
    src, _ = src_image
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    res = dv("hv", "convert", tmp_path / "nope.raw", tmp_path / "o.qcow2")
    assert res.code == 2 and "does not exist" in res.stderr
    res = dv("hv", "convert", src, tmp_path / "o.img", "-O", "qed")
    assert res.code == 2
    res = dv("hv", "convert", src, tmp_path / "o.vmdk", "-O", "vmdk", "--compress")
    assert res.code == 2 and "--compress needs -O qcow2" in res.stderr
    res = dv("hv", "convert", src, tmp_path / "missing-dir" / "o.qcow2")
    assert res.code == 2 and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []


def test_directory_destination_is_refused_before_work(dv, tmp_path: Path,
                                                      src_image: tuple[Path, str]) -> None:
    src, _ = src_image
    work = tmp_path / "work"
    (work / "rv").mkdir(parents=True)
    for dst in (f"{work}/rv/", str(work / "rv"), f"{work}/new/", ""):
        res = dv("hv", "convert", src, dst, "--force")
        assert res.code == 2, res
        assert res.stderr.strip().splitlines() == [
            f"[ERROR] destination {dst!r} is not an image file name: give a file path "
            "(not a directory), e.g. disk.qcow2"]
    assert sorted(p.name for p in work.rglob("*")) == ["rv"]  # nothing written anywhere
    assert not list(tmp_path.glob(".*"))


def test_not_enough_space(dv, tmp_path: Path, src_image: tuple[Path, str]) -> None:
    src, _ = src_image
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        res = dv("hv", "convert", src, mnt / "o.qcow2", "-O", "qcow2")
        assert res.code == 2 and "not enough free space" in res.stderr
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _wait_for_progress(state: Path, proc: subprocess.Popen, at_least: int, timeout: float = 60) -> int:
    """Poll the checkpoint file until the copy passed ``at_least`` bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            done = json.loads(state.read_text())["done"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= at_least:
            return int(done)
        time.sleep(0.005)
    raise AssertionError("the conversion made no progress")


@pytest.mark.parametrize("sig,checksum", [(signal.SIGKILL, "sha256-tree"), (signal.SIGINT, "sha256"),
                                          (signal.SIGKILL, "blake3")])
def test_interrupted_conversion_resumes(dv, tmp_path: Path, sig: signal.Signals, checksum: str) -> None:
    src = tmp_path / "big.raw"
    digest = make_raw(src, 160 * MiB, seed=2)
    if checksum == "sha256-tree":
        digest = tree_digest(src, 160 * MiB)
    elif checksum == "blake3":  # not saved in the checkpoint: the resumed run re-hashes the prefix
        digest = blake3_file(src)
    dst = tmp_path / "big.qcow2"
    state = tmp_path / ".big.qcow2.convert-state.json"
    # small segments: many checkpoints, so the kill lands mid-copy
    args = ["hv", "convert", src, dst, "-O", "qcow2", "--segment", "4", "--checksum", checksum]
    proc = dv.popen(*args)
    _wait_for_progress(state, proc, 40 * MiB)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the conversion finished before the signal arrived")
    assert not dst.exists(), "a half-written image sits under DST's name"
    assert (tmp_path / ".big.qcow2.partial").exists()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err
    checkpoint = json.loads(state.read_text())["done"]
    assert 0 < checkpoint < 160 * MiB
    res = dv(*args, "--resume", "--json")
    assert res.code == 0, res
    assert res.json["resumed_from"] == checkpoint
    assert res.json["copied_bytes"] == 160 * MiB - checkpoint
    assert res.json[checksum] == digest and identical(src, dst)
    assert leftovers(tmp_path) == []


def test_resume_refuses_changed_source(dv, tmp_path: Path) -> None:
    src = tmp_path / "s.raw"
    make_raw(src, 24 * MiB, seed=3)
    dst = tmp_path / "s.qcow2"
    proc = dv.popen("hv", "convert", src, dst, "-O", "qcow2", "--segment", "4")
    _wait_for_progress(tmp_path / ".s.qcow2.convert-state.json", proc, 4 * MiB)
    proc.kill()
    proc.communicate(timeout=60)
    if dst.exists():
        pytest.skip("the conversion finished before the kill")
    with open(src, "r+b") as f:
        f.write(b"changed")
    res = dv("hv", "convert", src, dst, "-O", "qcow2", "--segment", "4", "--resume")
    assert res.code == 2 and "cannot resume" in res.stderr


@pytest.mark.parametrize("streamed", [False, True], ids=["sha256-tree", "blake3"])
def test_verification_catches_a_differing_block(tmp_path: Path, streamed: bool) -> None:
    """The read-back check compares real bytes: one changed byte is found in its block; a hole
    and written-out zeros count as equal. Both paths: per-block digests (sha256-tree) and the
    in-order stream with read-ahead (blake3), whose digest must be b3sum's."""
    import blake3
    from debvisor_libvirt.media.convert import _Mismatch, _Verifier
    from debvisor_libvirt.media.extents import GuestReader, blocks, map_extents
    from debvisor_libvirt.media.hashing import Blake3Stream

    a, b = tmp_path / "a.raw", tmp_path / "b.raw"
    data = os.urandom(2 * MiB)
    tail = os.urandom(MiB + 4096)  # several read-ahead runs, the last one short
    size = 40 * MiB
    for p in (a, b):
        with open(p, "wb") as f:
            f.truncate(size)
            f.write(data)
            f.seek(size - len(tail))
            f.write(tail)
    with open(b, "r+b") as f:
        f.seek(4 * MiB)
        f.write(bytes(MiB))  # zeros written out where a has a hole
        f.seek(12 * MiB)
        f.write(bytes(20 * MiB))  # more than one CHUNK of written zeros: runs on one side only

    def check() -> list[bytes]:
        ra = GuestReader(str(a), "raw", odirect=False, sockdir=tmp_path, name="a")
        rb = GuestReader(str(b), "raw", odirect=True, sockdir=tmp_path, name="b")
        stream = Blake3Stream() if streamed else None
        v = _Verifier(ra, rb, stream)
        try:
            jobs = [(o, n, sp, dp) for (o, n, sp), (_, _, dp) in
                    zip(blocks(map_extents(str(a), "raw", 0, size, True), 0, size),
                        blocks(map_extents(str(b), "raw", 0, size, True), 0, size), strict=True)]
            out = v.submit(jobs[:7])() + v.submit(jobs[7:])()  # two segments, in order
            return [bytes.fromhex(stream.hexdigest())] if stream else out
        finally:
            v.close()
            ra.close()
            rb.close()

    digests = check()
    if streamed:
        assert digests == [blake3.blake3(a.read_bytes()).digest()]
    else:
        assert len(digests) == 40 and digests[4] == hashlib.sha256(bytes(MiB)).digest()
        assert digests[1] == hashlib.sha256(data[MiB:]).digest()
    for where in (MiB + 12345, size - 100):
        with open(b, "r+b") as f:
            f.seek(where)
            orig = f.read(1)
            f.seek(where)
            f.write(bytes([orig[0] ^ 1]))
        with pytest.raises(_Mismatch) as exc:
            check()
        assert exc.value.offset == where // MiB * MiB
        with open(b, "r+b") as f:
            f.seek(where)
            f.write(orig)


def test_segment_schedule() -> None:
    """Segments cover the image exactly, never exceed --segment, ramp up and down, and every
    boundary but the end is a whole MiB; a resume continues on the same boundaries."""
    from debvisor_libvirt.media.convert import Plan, schedule, segments

    for size, seg in [(1 << 30, 256 * MiB), (1 << 30, 64 * MiB), (8 * MiB + 5, 4 * MiB),
                      (3 * MiB, 4 * MiB), (100, 4 * MiB), (20 * MiB, 8 * MiB), (5 * MiB, MiB)]:
        sc = schedule(size, seg)
        assert sc[0][0] == 0 and sum(n for _, n in sc) == size
        assert all(a + n == b for (a, n), (b, _) in zip(sc, sc[1:], strict=False))
        assert all(n <= seg for _, n in sc[:-1]) and all(o % MiB == 0 for o, _ in sc)
    sc = schedule(1 << 30, 256 * MiB)
    assert [n // MiB for _, n in sc] == [32, 64, 128, 64, 256, 256, 128, 64, 32]
    plan = Plan("s", "d", "qcow2", "raw", 1 << 30, segment=256 * MiB)
    assert segments(plan, 288 * MiB) == sc[4:]
    assert segments(plan, 0) == sc and segments(plan, 1 << 30) == []
