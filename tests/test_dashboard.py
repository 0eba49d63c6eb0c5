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


# A dashboard whose /slow page takes a minute: a signal then arrives while a
# request is being served.
SLOW_DASHBOARD = """
import sys
import time

import optuna_dashboard

real_wsgi = optuna_dashboard.wsgi


def slow_wsgi(*args, **kwargs):
    app = real_wsgi(*args, **kwargs)

    def wrapped(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            print("serving /slow", flush=True)
            time.sleep(60)
        return app(environ, start_response)

    return wrapped


optuna_dashboard.wsgi = slow_wsgi
from blocksearch.cli import entry_point

entry_point()
"""


def test_dashboard_stops_on_sigterm_during_a_request(tiny_space, tmp_path):
    import select
    import signal
    import threading

    storage = tmp_path / "s.journal"
    run = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*run, "--trials", "1", "--epochs", "1"]) == 0
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SLOW_DASHBOARD, "dashboard", str(tiny_space)]
        + ["--storage", str(storage), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def request_slow_page():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=90)
                return
            except OSError:
                time.sleep(0.5)

    client = threading.Thread(target=request_slow_page, daemon=True)
    client.start()
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        assert ready, "the dashboard never served /slow"
        assert server.stdout.readline().strip() == "serving /slow"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        server.kill()
        server.wait()
