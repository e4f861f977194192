"""``eventml serve`` as a real process: API and stream engine together, SIGTERM flushes the log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from eventml import events as ev
from eventml.config import Settings
from eventml.log import open_log
from eventml.models.registry import push_model
from eventml.serving.routes import deploy
from tests.api.conftest import WINE_LR, wine_rows

CLI = "from eventml.cli import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_runs_api_and_engine_and_flushes_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "log"
    with open_log(str(data), Settings()) as log:
        push_model(log, WINE_LR, "wine-lr")
        deploy(log, "wine", "wine-lr")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--port", str(port), "--no-auth", "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "EVENTML_LOG": ""},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        rows = wine_rows(50)
        ids = []
        with httpx.Client(base_url=url) as client:
            for i, row in enumerate(rows):
                r = client.post(
                    "/api/endpoints/wine/predict", json={"id": f"h{i}", "features": row}
                )
                assert (r.status_code, r.json()["status"]) == (200, "ok")
                ids.append(f"h{i}")
        # a record from a producer, not from HTTP: the engine in the same process scores it
        with open_log(str(data), Settings()) as log:
            record = ev.Record(
                id="s1", endpoint="wine", ts=ev.now(), features=dict(rows[0].items())
            )
            log.append("records", [ev.encode(record)])
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/api/predictions/s1").status_code != 200:
            assert time.monotonic() < deadline, "expected the engine to score s1"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "warning: --no-auth" in err
    with open_log(str(data), Settings()) as log:
        logged = [
            p for b in log.read_all("predictions") for p in ev.decode_many(b.values, ev.Prediction)
        ]
        committed = log.committed("serve", "records")
        ends = log.end_offsets("records")
    assert sorted(p.record_id for p in logged) == sorted([*ids, "s1"])
    engine = [p for p in logged if p.record_id == "s1"]
    assert (engine[0].policy, engine[0].model, engine[0].version) == ("champion", "wine-lr", 1)
    assert committed == dict(enumerate(ends))  # the engine read past the answered records too
