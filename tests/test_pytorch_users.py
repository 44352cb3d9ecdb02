"""For PyTorch users: the torch.hub drop-in, the release weights by name (downloaded from a loopback
HTTP server standing in for GitHub), safetensors checkpoints, and ``naf-export bench``."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import warnings
from pathlib import Path

import pytest
import torch

from naf_export import load_naf
from naf_export.checkpoint import CheckpointError, convert_checkpoint
from naf_export.cli import main as cli_main
from naf_export.release import RELEASE_SHA256_ENV, RELEASE_URL_ENV, release_path

REPO = Path(__file__).resolve().parent.parent


def _release_like_state() -> dict[str, torch.Tensor]:
    """A state dict with the release's keys and shapes and recognisable, non-default values."""
    generator = torch.Generator().manual_seed(7)
    return {k: torch.randn(v.shape, generator=generator) * 0.05 if v.is_floating_point() and k.endswith("weight")
            else v.clone() for k, v in load_naf().state_dict().items()}


def _pth_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class _Server:
    """Serves /good (a release-format file), /truncated (declares its full length, sends half)
    and /garbage on loopback, counting requests."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.requests = payload, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.requests.append(self.path)
                body = {"/good": owner.payload, "/truncated": owner.payload,
                        "/garbage": b"<html>not a checkpoint</html>"}.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path == "/truncated" else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def release_server(tmp_path, monkeypatch):
    """A loopback release server and an empty torch hub cache in tmp_path."""
    state = _release_like_state()
    server = _Server(_pth_bytes(state))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(RELEASE_SHA256_ENV, raising=False)
    yield server, state
    server.close()


def _cache_is_empty() -> bool:
    folder = release_path().parent
    return not folder.exists() or not any(folder.iterdir())


def _same_weights(model, state) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_release_weights_by_name_download_once_into_the_hub_cache(release_server, monkeypatch):
    server, state = release_server
    monkeypatch.setenv(RELEASE_URL_ENV, server.url("/good"))
    model = load_naf("release")
    assert _same_weights(model, state) and not model.training
    assert release_path().is_file() and release_path().name == "naf_release.pth"
    assert _same_weights(load_naf("release"), state)  # from the cache
    assert server.requests == ["/good"]


def test_pinned_digest_is_checked(release_server, monkeypatch):
    server, state = release_server
    monkeypatch.setenv(RELEASE_URL_ENV, server.url("/good"))
    monkeypatch.setenv(RELEASE_SHA256_ENV, hashlib.sha256(server.payload).hexdigest())
    assert _same_weights(load_naf("release"), state)


@pytest.mark.parametrize("path, digest, message", [
    ("/truncated", None, r"stopped after \d+ of \d+ bytes; nothing was kept"),
    ("/good", "0" * 64, "has SHA-256 [0-9a-f]{64}, expected 0{64}"),
    ("/garbage", None, "is not a readable PyTorch checkpoint"),
])
def test_bad_downloads_are_refused_and_leave_nothing(release_server, monkeypatch, path, digest, message):
    server, _ = release_server
    monkeypatch.setenv(RELEASE_URL_ENV, server.url(path))
    if digest:
        monkeypatch.setenv(RELEASE_SHA256_ENV, digest)
    with pytest.raises(CheckpointError, match=message):
        load_naf("release")
    assert _cache_is_empty()


def test_offline_says_what_to_download_and_where(release_server, monkeypatch):
    server, _ = release_server
    url = server.url("/good")
    server.close()  # nothing listens any more
    monkeypatch.setenv(RELEASE_URL_ENV, url)
    with pytest.raises(CheckpointError) as info:
        load_naf("release")
    assert f"download {url}" in str(info.value) and str(release_path()) in str(info.value)
    assert _cache_is_empty()


def test_a_bad_cached_file_is_reported_when_a_digest_is_pinned(release_server, monkeypatch):
    release_path().parent.mkdir(parents=True)
    release_path().write_bytes(b"stale")
    monkeypatch.setenv(RELEASE_SHA256_ENV, "1" * 64)
    with pytest.raises(CheckpointError, match="delete the file to download it again"):
        load_naf("release")


def test_export_records_the_checkpoint_digest(release_server, monkeypatch, tmp_path):
    server, _ = release_server
    monkeypatch.setenv(RELEASE_URL_ENV, server.url("/good"))
    out = tmp_path / "out"
    assert cli_main(["--checkpoint", "release", "--target", "onnx", "--image-size", "36", "36", "--feature-size",
                     "9", "9", "--output-size", "18", "18", "--channels", "8", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"] == {"path": str(release_path()), "sha256": hashlib.sha256(server.payload).hexdigest()}


# ---- torch.hub ---------------------------------------------------------------------------------


def test_torch_hub_local_clone_returns_the_same_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hub_model = torch.hub.load(str(REPO), "naf", source="local", pretrained=False)
        reference = load_naf()
    image, features = torch.randn(1, 3, 64, 64), torch.randn(1, 32, 16, 16)
    with torch.inference_mode():
        assert torch.equal(hub_model(image, features, (32, 32)), reference(image, features, (32, 32)))
    assert not hub_model.training


def test_torch_hub_pretrained_downloads_the_release(release_server, monkeypatch):
    server, state = release_server
    monkeypatch.setenv(RELEASE_URL_ENV, server.url("/good"))
    model = torch.hub.load(str(REPO), "naf", source="local", pretrained=True, device="cpu")
    assert _same_weights(model, state)


# ---- safetensors -------------------------------------------------------------------------------


def test_convert_checkpoint_writes_safetensors_that_load_without_pickle(tmp_path, capsys):
    state = _release_like_state()
    torch.save({"state_dict": state}, tmp_path / "naf_release.pth")  # the wrapped release layout
    out = tmp_path / "naf.safetensors"
    assert cli_main(["convert-checkpoint", str(tmp_path / "naf_release.pth"), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    header_length = int.from_bytes(out.read_bytes()[:8], "little")  # safetensors: length + JSON header
    header = json.loads(out.read_bytes()[8:8 + header_length])
    assert header["__metadata__"]["source_sha256"] == hashlib.sha256((tmp_path / "naf_release.pth").read_bytes()).hexdigest()
    assert _same_weights(load_naf(out), state)


def test_convert_checkpoint_refuses_bad_input(tmp_path, capsys):
    assert cli_main(["convert-checkpoint", str(tmp_path / "missing.pth"), str(tmp_path / "x.safetensors")]) == 2
    assert "checkpoint: no such file" in capsys.readouterr().err
    torch.save(_release_like_state(), tmp_path / "ok.pth")
    assert cli_main(["convert-checkpoint", str(tmp_path / "ok.pth"), str(tmp_path / "x.pt")]) == 2
    assert "destination: expected a path ending in .safetensors" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json at all}")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_naf(tmp_path / "bad.safetensors")


# ---- naf-export bench --------------------------------------------------------------------------


def test_bench_subcommand_writes_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (naf-export[bench]) draws the plot")
    png, md = tmp_path / "bench.png", tmp_path / "bench.md"
    code = cli_main(["bench", "--ratios", "2", "--backends", "pytorch", "onnxruntime", "--image", "36",
                     "--features", "9", "--channels", "8", "--repeats", "1", "--plot", str(png), "--markdown", str(md)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| backend | ratio 2 ms |" in out and "| onnxruntime | 2 | 18 |" in out
    assert md.read_text().count("| pytorch |") == 2  # summary and full table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bench_refuses_bad_counts(capsys):
    assert cli_main(["bench", "--ratios", "0"]) == 2
    assert "ratios: expected an int 1 or more" in capsys.readouterr().err
