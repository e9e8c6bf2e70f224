"""download_mnist against a local HTTP server on 127.0.0.1; nothing here touches the internet.

The server maps URL paths to (body, announced Content-Length). Each test puts the files it
needs under a "mirror" prefix such as /good/ or /corrupt/, and passes those prefixes as
``mirrors=``. The files are small generated IDX files, so ``files=`` carries their hashes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from vae_from_scratch import data
from vae_from_scratch.course import download

pytestmark = pytest.mark.lesson05


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (name fixed by http.server)
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, announced, pause = (*route, 0.0) if len(route) == 2 else route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if announced is not None:  # None: no Content-Length, the body ends when we close
            self.send_header("Content-Length", str(announced))
        self.end_headers()
        if not pause:
            self.wfile.write(body)
        else:  # a trickle: 100 bytes, a pause, 100 bytes, ...
            try:
                for start in range(0, len(body), 100):
                    self.wfile.write(body[start : start + 100])
                    self.wfile.flush()
                    sent = self.server.sent
                    sent[self.path] = sent.get(self.path, 0) + len(body[start : start + 100])
                    time.sleep(pause)
            except OSError:  # the client gave up
                pass
        # HTTP/1.0: the connection closes here, even when fewer bytes than announced went out.

    def log_message(self, format, *args):  # keep the test output clean
        pass


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 with editable routes and a log of requests."""

    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes = {}
        self.httpd.hits = []
        self.httpd.sent = {}  # path -> bytes of a trickled body written so far
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def hits(self) -> list[str]:
        return self.httpd.hits

    def mirror(self, prefix: str, files: dict[str, bytes], announce_extra: int = 0) -> str:
        """Serve ``files`` under ``/prefix/``; returns that mirror's base URL."""
        for name, body in files.items():
            self.httpd.routes[f"/{prefix}/{name}"] = (body, len(body) + announce_extra)
        return f"{self.base}/{prefix}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch):
    # Never send the loopback requests through a proxy the environment may configure.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def fake_files(tmp_path_factory) -> dict[str, bytes]:
    """The four MNIST file names, holding small generated gzipped IDX files."""
    folder = tmp_path_factory.mktemp("fake_mnist")
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    return {name: data.write_idx(folder / name, a).read_bytes() for name, a in arrays.items()}


@pytest.fixture(scope="module")
def hashes(fake_files) -> dict[str, str]:
    return {name: hashlib.sha256(body).hexdigest() for name, body in fake_files.items()}


def _dead_mirror() -> str:
    """A base URL on a port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def _corrupt(files: dict[str, bytes]) -> dict[str, bytes]:
    """Same sizes, one byte flipped near the end of each file."""
    return {name: body[:-5] + bytes([body[-5] ^ 0xFF]) + body[-4:] for name, body in files.items()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or "part" in p.name)


def _download(dest, mirrors, files, **kwargs):
    return download.download_mnist(dest, mirrors=mirrors, files=files, timeout=5.0, **kwargs)


def test_download_then_load(tmp_path, server, fake_files, hashes):
    good = server.mirror("good", fake_files)
    dest = tmp_path / "mnist"
    assert _download(dest, (good,), hashes, progress=False) == dest
    for name, body in fake_files.items():
        assert (dest / name).read_bytes() == body
    assert _leftovers(dest) == []
    assert len(server.hits) == 4

    ds = data.load_mnist(source="mnist", root=dest)
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (4, 784)
    expected = data.read_idx(dest / "train-images-idx3-ubyte.gz").reshape(6, 784) / 255.0
    np.testing.assert_allclose(ds.x_train, expected, rtol=1e-6)


def test_progress_bar_on_does_not_break_a_download(tmp_path, server, fake_files, hashes):
    good = server.mirror("good", fake_files)
    _download(tmp_path, (good,), hashes, progress=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(fake_files)


def test_wrong_checksum_falls_through_to_next_mirror(tmp_path, server, fake_files, hashes):
    bad = server.mirror("corrupt", _corrupt(fake_files))
    good = server.mirror("good", fake_files)
    _download(tmp_path, (bad, good), hashes, progress=False)
    for name, body in fake_files.items():
        assert (tmp_path / name).read_bytes() == body
        assert f"/corrupt/{name}" in server.hits and f"/good/{name}" in server.hits
    assert _leftovers(tmp_path) == []


def test_dead_mirror_falls_through(tmp_path, server, fake_files, hashes):
    good = server.mirror("good", fake_files)
    _download(tmp_path, (_dead_mirror(), good), hashes, progress=False)
    for name, body in fake_files.items():
        assert (tmp_path / name).read_bytes() == body


def test_http_error_falls_through(tmp_path, server, fake_files, hashes):
    empty = f"{server.base}/nothing-here/"
    good = server.mirror("good", fake_files)
    _download(tmp_path, (empty, good), hashes, progress=False)
    assert all((tmp_path / name).is_file() for name in fake_files)


def test_truncated_body_is_rejected(tmp_path, server, fake_files, hashes):
    # The server announces 100 bytes more than it sends, then closes the connection.
    short = server.mirror("short", fake_files, announce_extra=100)
    with pytest.raises(download.DownloadError, match="truncated") as info:
        _download(tmp_path, (short,), hashes, progress=False)
    name = next(iter(hashes))
    size = len(fake_files[name])
    assert f"expected {size + 100} bytes, got {size}" in str(info.value)
    assert not (tmp_path / name).exists()
    assert list(tmp_path.iterdir()) == []


def test_truncated_body_falls_through(tmp_path, server, fake_files, hashes):
    short = server.mirror("short", fake_files, announce_extra=100)
    good = server.mirror("good", fake_files)
    _download(tmp_path, (short, good), hashes, progress=False)
    for name, body in fake_files.items():
        assert (tmp_path / name).read_bytes() == body
    assert _leftovers(tmp_path) == []


def test_cut_content_with_honest_length_fails_the_hash(tmp_path, server, fake_files, hashes):
    cut = server.mirror("cut", {name: body[: len(body) // 2] for name, body in fake_files.items()})
    with pytest.raises(download.DownloadError, match="checksum mismatch"):
        _download(tmp_path, (cut,), hashes, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_all_mirrors_bad_raises_listing_each(tmp_path, server, fake_files, hashes):
    dead = _dead_mirror()
    bad = server.mirror("corrupt", _corrupt(fake_files))
    short = server.mirror("short", fake_files, announce_extra=7)
    missing = f"{server.base}/missing/"
    mirrors = (dead, bad, short, missing)
    with pytest.raises(download.DownloadError) as info:
        _download(tmp_path, mirrors, hashes, progress=False)
    err = info.value
    assert isinstance(err, RuntimeError)
    message = str(err)
    name = next(iter(hashes))
    assert name in message
    for mirror in mirrors:
        assert mirror + name in message
    assert "connection failed" in message
    assert "checksum mismatch" in message
    assert "truncated" in message
    assert "404" in message
    # Nothing under a final name, and no temporary files either.
    assert list(tmp_path.iterdir()) == []


def test_good_existing_file_is_not_downloaded_again(tmp_path, server, fake_files, hashes):
    good = server.mirror("good", fake_files)
    keep = "train-images-idx3-ubyte.gz"
    (tmp_path / keep).write_bytes(fake_files[keep])
    _download(tmp_path, (good,), hashes, progress=False)
    assert f"/good/{keep}" not in server.hits
    assert len(server.hits) == 3
    # A second run fetches nothing at all.
    server.hits.clear()
    _download(tmp_path, (good,), hashes, progress=False)
    assert server.hits == []


def test_damaged_existing_file_is_replaced(tmp_path, server, fake_files, hashes):
    good = server.mirror("good", fake_files)
    name = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / name).write_bytes(b"half a file")
    _download(tmp_path, (good,), hashes, progress=False)
    assert (tmp_path / name).read_bytes() == fake_files[name]
    assert f"/good/{name}" in server.hits


def test_failed_download_keeps_an_existing_file_untouched(tmp_path, server, fake_files, hashes):
    name = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / name).write_bytes(b"old bytes")
    bad = server.mirror("corrupt", _corrupt(fake_files))
    with pytest.raises(download.DownloadError):
        _download(tmp_path, (bad,), {name: hashes[name]}, progress=False)
    assert (tmp_path / name).read_bytes() == b"old bytes"
    assert _leftovers(tmp_path) == []


def test_mirror_without_trailing_slash(tmp_path, server, fake_files, hashes):
    good = server.mirror("good", fake_files).rstrip("/")
    _download(tmp_path, (good,), hashes, progress=False)
    assert all((tmp_path / name).is_file() for name in fake_files)


def test_default_destination_honours_env(tmp_path, server, fake_files, hashes, monkeypatch):
    monkeypatch.setenv("VAE_COURSE_DATA", str(tmp_path))
    good = server.mirror("good", fake_files)
    dest = download.download_mnist(mirrors=(good,), files=hashes, progress=False)
    assert dest == tmp_path / "mnist"
    assert data.load_mnist(source="mnist").x_test.shape == (4, 784)


def test_no_mirrors_is_an_error(tmp_path, hashes):
    with pytest.raises(ValueError, match="mirror"):
        download.download_mnist(tmp_path, mirrors=(), files=hashes)


def test_pinned_mnist_constants_are_well_formed():
    assert set(download.MNIST_FILES) == {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    }
    for digest in download.MNIST_FILES.values():
        assert len(digest) == 64 and int(digest, 16) >= 0 and digest == digest.lower()
    assert len(download.MNIST_MIRRORS) >= 2
    assert all(m.startswith("https://") and m.endswith("/") for m in download.MNIST_MIRRORS)


# --- limits: a deadline, a size cap; files, leftovers and the command line ----------------


def test_pinned_sizes_sit_beside_the_hashes():
    assert set(download.MNIST_SIZES) == set(download.MNIST_FILES)
    assert all(isinstance(n, int) and 4_000 < n < 20_000_000 for n in download.MNIST_SIZES.values())


def test_a_trickling_mirror_is_stopped_by_the_deadline(tmp_path, server, fake_files, hashes):
    name = "train-images-idx3-ubyte.gz"
    body = fake_files[name] * 4  # about 10 kB at 100 bytes per 50 ms: 5 s in all
    server.httpd.routes[f"/slow/{name}"] = (body, len(body), 0.05)
    with pytest.raises(download.DownloadError, match=r"deadline of 0.5 s") as info:
        download.download_mnist(tmp_path, mirrors=(f"{server.base}/slow/",),
                            files={name: hashes[name]}, timeout=5.0, deadline=0.5,
                            progress=False)
    # It gave up while the mirror was still sending: a client that read the whole body (and
    # only then looked at the clock) would have had every byte written first.
    assert 0 < server.httpd.sent[f"/slow/{name}"] < len(body)
    assert "--deadline" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("announce", [True, False], ids=["announced", "unannounced"])
def test_a_body_larger_than_the_pinned_size_is_cut_off(tmp_path, server, fake_files, hashes,
                                                       announce):
    name = "t10k-labels-idx1-ubyte.gz"
    size = len(fake_files[name])
    huge = fake_files[name] + b"\0" * 10 * size
    server.httpd.routes[f"/huge/{name}"] = (huge, len(huge) if announce else None)
    good = server.mirror("good", fake_files)
    with pytest.raises(download.DownloadError, match="too large") as info:
        _download(tmp_path, (f"{server.base}/huge/",), {name: hashes[name]}, progress=False,
                  sizes={name: size})
    assert (f"announces {len(huge)} bytes" in str(info.value)) == announce
    assert list(tmp_path.iterdir()) == []
    # the next mirror is tried, as for any other bad mirror
    _download(tmp_path, (f"{server.base}/huge/", good), {name: hashes[name]}, progress=False,
              sizes={name: size})
    assert (tmp_path / name).read_bytes() == fake_files[name]


def test_files_are_readable_by_the_group_and_others(tmp_path, server, fake_files, hashes):
    old = os.umask(0o022)
    try:
        _download(tmp_path, (server.mirror("good", fake_files),), hashes, progress=False)
    finally:
        os.umask(old)
    for name in fake_files:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_stale_part_files_of_a_killed_download_are_removed(tmp_path, server, fake_files, hashes):
    stale = [tmp_path / ".train-images-idx3-ubyte.gz.0a1b2c3d.part",
             tmp_path / ".t10k-labels-idx1-ubyte.gz.k2_9xq0z.part"]  # an older version's
    for path in stale:
        path.write_bytes(b"half")
    keep = [tmp_path / "notes.part", tmp_path / ".other-file.0a1b2c3d.part"]
    for path in keep:
        path.write_bytes(b"mine")
    _download(tmp_path, (server.mirror("good", fake_files),), hashes, progress=False)
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"mine" for p in keep)


def test_dest_that_is_a_file_is_a_clear_error(tmp_path, hashes):
    target = tmp_path / "mnist"
    target.write_text("a file")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        download.download_mnist(target, mirrors=("http://127.0.0.1:9/",), files=hashes)
    with pytest.raises(ValueError, match="cannot create the download folder"):
        download.download_mnist(target / "sub", mirrors=("http://127.0.0.1:9/",), files=hashes)
    assert target.read_text() == "a file"


@pytest.mark.parametrize("kwargs", [dict(timeout=0), dict(deadline=-1), dict(timeout=True),
                                    dict(mirrors="http://127.0.0.1:9/")])
def test_bad_limits_are_refused(tmp_path, hashes, kwargs):
    kwargs = {"mirrors": ("http://127.0.0.1:9/",), **kwargs}
    with pytest.raises(ValueError):
        download.download_mnist(tmp_path, files=hashes, **kwargs)


def _cli(*args):
    import subprocess

    return subprocess.run([sys.executable, "-m", "vae_from_scratch.course.cli", *args],
                          capture_output=True, text=True, timeout=600)  # a hang guard only


def test_command_line_takes_mirrors_timeout_and_deadline(tmp_path, server, fake_files,
                                                         monkeypatch):
    from vae_from_scratch.course import cli

    calls = []
    monkeypatch.setattr(download, "download_mnist",
                        lambda **kw: calls.append(kw) or (kw["dest"] or tmp_path))
    bad = f"{server.base}/nothing/"
    good = server.mirror("good", fake_files)
    code = cli.main(["download", "mnist", "--mirror", bad, "--mirror", good,
                     "--timeout", "2.5", "--deadline", "30", "--dest", str(tmp_path)])
    assert code == 0
    assert calls == [dict(dest=tmp_path, mirrors=(bad, good), timeout=2.5, deadline=30.0)]
    calls.clear()
    assert cli.main(["download", "mnist"]) == 0
    assert calls[0]["mirrors"] == download.MNIST_MIRRORS


def test_command_line_refuses_a_dest_that_is_a_file_in_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = _cli("download", "mnist", "--dest", str(target), "--mirror", "http://127.0.0.1:9/")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "is a file, not a folder" in result.stderr


@pytest.mark.parametrize("args", [["--timeout", "0"], ["--timeout", "abc"],
                                  ["--deadline", "-5"]])
def test_command_line_refuses_bad_limits_with_the_usage(args):
    result = _cli("download", "mnist", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: vae-course download")
    assert "Traceback" not in result.stderr
