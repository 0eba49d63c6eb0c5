"""``blocksearch dashboard``: the real optuna-dashboard on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

from blocksearch.cli import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dashboard_serves_studies_on_loopback(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    run = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*run, "--trials", "1", "--epochs", "1"]) == 0
    port = _free_port()
    entry = "from blocksearch.cli import entry_point; entry_point()"
    server = subprocess.Popen(
        [sys.executable, "-c", entry, "dashboard", str(tiny_space)]
        + ["--storage", str(storage), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while body is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                url = f"http://127.0.0.1:{port}/api/studies"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.load(response)
            except OSError:
                assert server.poll() is None, server.stderr.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [s["study_name"] for s in body["study_summaries"]] == ["tiny-depth2"]


def test_dashboard_port_taken(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    run = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*run, "--trials", "1", "--epochs", "1"]) == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", str(tiny_space), "--storage", str(storage)]
                    + ["--port", str(port)])  # fmt: skip
    assert code == 6
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_dashboard_without_storage(tiny_space, tmp_path, capsys):
    code = main(["dashboard", str(tiny_space), "--studies-dir", str(tmp_path)])
    assert code == 6
    assert "not found; run 'blocksearch run" in capsys.readouterr().err
