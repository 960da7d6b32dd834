"""Downloads against a local HTTP server and file:// URLs: mirrors, checksums, interruptions.

No test contacts a real host: every URL is 127.0.0.1 or file://.
"""

import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import rnnlab.data.imdb as imdb_module
from rnnlab.data import DataError, load_imdb, load_mnist, sample_dir
from rnnlab.data.download import download_file

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
needs_shared = pytest.mark.skipif(
    not (SHARED / "mnist").is_dir(), reason=f"full data not found at {SHARED}"
)
STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; under ``/cut/`` it sends half the body and hangs up."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        cut = self.path.startswith("/cut/")
        body = self.server.files.get(self.path.removeprefix("/cut"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        self.server.hits.append(self.path)
        if cut:
            self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server():
    """A local HTTP server; put bytes into ``server.files["/path"]``; ``server.url`` is its base."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.hits = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _no_leftovers(folder: Path) -> list[str]:
    """Files under ``folder`` (hidden temporary ones included), relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_download_checks_md5_and_writes_atomically(tmp_path, server):
    payload = b"hello rnnlab " * 1000
    server.files["/f.bin"] = payload
    md5 = hashlib.md5(payload).hexdigest()
    dest = download_file([server.url + "/f.bin"], tmp_path / "d" / "f.bin", md5=md5)
    assert dest.read_bytes() == payload
    with pytest.raises(DataError, match=r"expected md5 0{32}, got " + md5):
        download_file([server.url + "/f.bin"], tmp_path / "e" / "f.bin", md5="0" * 32)
    assert _no_leftovers(tmp_path / "e") == []


def test_interrupted_download_leaves_nothing_and_restarts_cleanly(tmp_path, server):
    payload = bytes(range(256)) * 4000
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match=r"expected 1024000 bytes \(Content-Length\), got 512000"):
        download_file([server.url + "/cut/f.bin"], dest)
    assert _no_leftovers(tmp_path) == []
    assert download_file([server.url + "/f.bin"], dest).read_bytes() == payload


def test_all_mirrors_failing_lists_each(tmp_path, server):
    urls = [server.url + "/missing.bin", (tmp_path / "absent.bin").as_uri(), "nonsense://x"]
    with pytest.raises(DataError, match=r"got none:\n.*missing.bin: HTTPError.*404") as info:
        download_file(urls, tmp_path / "out" / "f.bin")
    assert all(url in str(info.value) for url in urls)
    assert _no_leftovers(tmp_path / "out") == []
    with pytest.raises(DataError, match="expected at least one URL"):
        download_file([], tmp_path / "f.bin")


def test_unwritable_cache_is_reported(tmp_path, monkeypatch, server):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache root should be")
    monkeypatch.setenv("RNNLAB_DATA", str(blocker))
    with pytest.raises(
        DataError,
        match=rf"cache directory {blocker / 'mnist'}: expected a "
        "writable directory, got NotADirectoryError",
    ):
        load_mnist(mirrors=[server.url + "/"])
    assert server.hits == []  # refused before any download


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="permissions do not bind root"
)
def test_read_only_cache_is_reported(tmp_path, server):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist").chmod(0o555)
    try:
        with pytest.raises(DataError, match="expected a writable directory, got PermissionError"):
            load_mnist(data_dir=tmp_path, mirrors=[server.url + "/"])
    finally:
        (tmp_path / "mnist").chmod(0o755)


@needs_shared
def test_mnist_downloads_from_the_second_mirror_and_verifies(tmp_path, server, capfd):
    for stem in STEMS:
        server.files[f"/mnist/{stem}.gz"] = (SHARED / "mnist" / f"{stem}.gz").read_bytes()
    mirrors = [server.url + "/down/", server.url + "/mnist/"]
    (x, y), (xt, yt) = load_mnist(data_dir=tmp_path, mirrors=mirrors)
    assert x.shape == (60000, 28, 28) and yt.shape == (10000,)
    assert _no_leftovers(tmp_path) == sorted(f"mnist/{stem}.gz" for stem in STEMS)
    assert capfd.readouterr() == ("", "")  # the library is silent without progress=True
    (x2, _), _ = load_mnist(data_dir=tmp_path, download=False)  # now served from the folder
    np.testing.assert_array_equal(x, x2)


def test_mnist_download_with_wrong_content_is_rejected(tmp_path, server):
    # the sample's image file under the canonical name: valid gzip and IDX, wrong sha256
    server.files["/m/train-images-idx3-ubyte.gz"] = (
        sample_dir() / "train-images-idx3-ubyte.gz"
    ).read_bytes()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: expected sha256 ba891046"):
        load_mnist(data_dir=tmp_path, mirrors=[server.url + "/m/"])
    assert _no_leftovers(tmp_path) == []  # not even a hidden temporary file


def test_mnist_download_progress_bar_goes_to_stderr(tmp_path, server, capfd):
    server.files["/m/train-images-idx3-ubyte.gz"] = b"not gzip at all"
    with pytest.raises(DataError):
        load_mnist(data_dir=tmp_path, mirrors=[server.url + "/m/"], progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "train-images-idx3-ubyte.gz" in err


def test_imdb_download_end_to_end(tmp_path, server, monkeypatch):
    # serve the sample archive as if it were upstream's, with its own md5 and counts
    archive = (sample_dir() / "aclImdb_sample.tar.gz").read_bytes()
    server.files["/imdb/aclImdb_v1.tar.gz"] = archive
    monkeypatch.setattr(imdb_module, "IMDB_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(imdb_module, "PER_LABEL", 1250)
    (x, y), (xt, yt) = load_imdb(
        num_words=500, data_dir=tmp_path, cache_dir=tmp_path / "c", mirrors=[server.url + "/imdb/"]
    )
    assert len(x) == len(xt) == 2500 and (tmp_path / "imdb" / "aclImdb_v1.tar.gz").is_file()
    assert max(max(s) for s in x) < 500


@needs_shared
def test_imdb_download_with_wrong_md5_leaves_nothing(tmp_path):
    # the shared archive lacks the *.feat files, so its md5 differs from upstream's
    with pytest.raises(DataError, match=r"expected md5 7c2ac02c03563afcf9b574c7e56c153a, got"):
        load_imdb(
            data_dir=tmp_path, cache_dir=tmp_path / "c", mirrors=[(SHARED / "imdb").as_uri() + "/"]
        )
    assert _no_leftovers(tmp_path) == []
