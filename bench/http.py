"""HTTP serving: ``eventml serve`` (every request logged) next to MLServer 1.7, in the same run.

Model: the churn HistGradientBoostingClassifier(max_iter=100) on 20 float features
(``bench/stream.py`` ``train()``): ONNX for eventml and for a minimal custom MLServer ONNX
runtime, and the same fitted estimator saved with joblib for MLServer's official
scikit-learn runtime (``mlserver_sklearn.SKLearnModel``). MLServer runs from its own
virtualenv (``/tmp/mlserver-venv``, created here on first use with
``pip install 'mlserver==1.7.*' mlserver-sklearn onnxruntime``), with its defaults, and
``uvloop<0.22``: MLServer 1.7.1's inference worker calls ``asyncio.get_event_loop()`` in a
process without a loop, which uvloop 0.22+ refuses, so with the newest uvloop every worker
dies at start and the server exits).

Load: ``wrk`` (Debian package) posting Open Inference Protocol v2 JSON to
``/v2/models/churn/infer`` on each server, one FP32 tensor ``[1, 20]`` (single records,
concurrency 1, 8 and 64) or ``[100, 20]`` (batches, concurrency 8), one connection per
concurrent client, ``--runs`` runs of ``--seconds`` each after a warm-up. Printed: the
median requests/s and the median p99 latency of the runs, non-2xx answers. For eventml,
the prediction events on its log are counted after the run (the server is stopped with
SIGTERM, which flushes the writer): every answered row must be there. Both servers and ``wrk`` share the machine's cores, as they do in the same run.

eventml runs as ``eventml serve`` does by default: one process (the API, the group-commit
writer and the stream engine), every answered row a record and a prediction event on its
SQLite log, committed by the writer within a few ms of the answer (not ``--sync``). A
100-row request is scored with one model call and its 100 prediction events are written
in one append. MLServer runs with its defaults (one inference worker process besides the
HTTP process).

    python -m bench.http [--seconds 5] [--runs 3]
"""

# ruff: noqa: E402  (the imports must follow the sys.path fix below)
from __future__ import annotations

import sys

# This file is named http.py: drop its folder from the path so `import http` finds the stdlib.
sys.path[:] = [p for p in sys.path if not p.endswith("bench")]

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import joblib  # type: ignore[import-untyped, unused-ignore]
import numpy as np

from bench import stream
from eventml.config import Settings
from eventml.demo import FEATURES, churn_customers
from eventml.log import open_log
from eventml.models.registry import push_model
from eventml.serving.routes import deploy

VENV = Path("/tmp/mlserver-venv")
CLI = "from eventml.cli import main; main()"
SCENARIOS = [("single", 1, 1), ("single", 8, 1), ("single", 64, 1), ("batch100", 8, 100)]

ONNX_RUNTIME = '''
"""A minimal MLServer runtime for an ONNX classifier (zipmap off): label and probabilities."""
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(await get_model_uri(self._settings), opts)
        self.input = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        label, probs = self.session.run(None, {self.input: x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("label", label), NumpyCodec.encode_output("probabilities", probs)],
        )
'''


def train(folder: Path, seed: int = 1) -> tuple[Path, Path]:
    """The churn HGB-100 of bench/stream.py as ONNX and as a joblib file."""
    onnx_path, joblib_path = folder / "churn.onnx", folder / "model.joblib"
    joblib.dump(stream.train(onnx_path, seed), joblib_path)
    return onnx_path, joblib_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"expected the server at {url} to start, got exit {proc.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"expected {url} ready within {seconds} s")


def ensure_mlserver() -> Path:
    mlserver = VENV / "bin" / "mlserver"
    pip = str(VENV / "bin" / "pip")
    if not mlserver.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [pip, "install", "--quiet", "mlserver==1.7.*", "mlserver-sklearn", "onnxruntime"],
            check=True,
        )
    subprocess.run([pip, "install", "--quiet", "uvloop<0.22"], check=True)
    return mlserver


def mlserver_repo(folder: Path, onnx_path: Path, joblib_path: Path, port: int) -> Path:
    repo = folder / "mlserver"
    (repo / "churn").mkdir(parents=True)
    (repo / "churn-onnx").mkdir()
    shutil.copy(joblib_path, repo / "churn" / "model.joblib")
    shutil.copy(onnx_path, repo / "churn-onnx" / "model.onnx")
    (repo / "onnx_runtime.py").write_text(textwrap.dedent(ONNX_RUNTIME))
    (repo / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "host": "127.0.0.1", "debug": False,
    }))  # fmt: skip
    (repo / "churn" / "model-settings.json").write_text(json.dumps({
        "name": "churn", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"},
    }))  # fmt: skip
    (repo / "churn-onnx" / "model-settings.json").write_text(json.dumps({
        "name": "churn-onnx", "implementation": "onnx_runtime.OnnxModel",
        "parameters": {"uri": "./model.onnx", "version": "1"},
    }))  # fmt: skip
    return repo


def body(rows: int) -> str:
    x, _ = churn_customers(rows, seed=7)
    matrix = np.column_stack([x[f] for f in FEATURES]).astype(np.float32)
    return json.dumps({"inputs": [{
        "name": "input", "shape": [rows, len(FEATURES)], "datatype": "FP32",
        "data": matrix.reshape(-1).tolist(),
    }]})  # fmt: skip


def wrk(url: str, payload: str, connections: int, seconds: float, folder: Path) -> dict[str, float]:
    script = folder / "post.lua"
    (folder / "body.json").write_text(payload)
    script.write_text(textwrap.dedent(f'''
        wrk.method = "POST"
        wrk.headers["Content-Type"] = "application/json"
        local f = io.open("{folder / "body.json"}", "r")
        wrk.body = f:read("*a")
        f:close()
    '''))  # fmt: skip
    out = subprocess.run(
        ["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
         "--latency", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "requests": total, "failed": failed}


def run_all(
    name: str, url: str, seconds: float, folder: Path, runs: int
) -> dict[tuple[str, int], dict[str, float]]:
    """Each scenario after a warm-up, ``runs`` times: the median req/s and the median p99."""
    results = {}
    for kind, conc, rows in SCENARIOS:
        payload = body(rows)
        wrk(url, payload, conc, min(2.0, seconds), folder)  # warm-up
        measured = [wrk(url, payload, conc, seconds, folder) for _ in range(runs)]
        results[(kind, conc)] = r = {
            "rps": statistics.median(m["rps"] for m in measured),
            "p99_ms": statistics.median(m["p99_ms"] for m in measured),
            "failed": sum(m["failed"] for m in measured),
            "rows": rows,
        }
        spread = ", ".join(f"{m['rps']:.0f}" for m in measured)
        print(
            f"  {name:16} {kind:9} c={conc:<3} {r['rps']:9.0f} req/s ({spread})  p99 {r['p99_ms']:8.2f} ms  failed {r['failed']:.0f}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (the median)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("expected wrk on PATH (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="eventml-bench-http-") as tmp:
        folder = Path(tmp)
        onnx_path, joblib_path = train(folder)
        table: dict[str, dict[tuple[str, int], dict[str, float]]] = {}

        # eventml: the API and the engine in one process, every answer on the log
        data = folder / "log"
        with open_log(str(data), Settings()) as log:
            push_model(log, onnx_path, "churn")
            deploy(log, "churn", "churn")
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "serve", "--no-auth", "--port", str(port), "--data", str(data)],
            stderr=subprocess.DEVNULL, env={**os.environ, "EVENTML_LOG": ""}, cwd=folder,
        )  # fmt: skip
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            print("eventml serve (logging on)", flush=True)
            table["eventml"] = run_all(
                "eventml",
                f"http://127.0.0.1:{port}/v2/models/churn/infer",
                args.seconds,
                folder,
                args.runs,
            )
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            answered = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("eventml_predictions_total{")
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        with open_log(str(data), Settings()) as log:
            logged = sum(log.end_offsets("predictions"))
        verdict = "every answered row is on the log" if logged == answered else "MISSING ROWS"
        print(
            f"  rows answered (server count, warm-ups included): {answered:.0f}; "
            f"prediction events on the log after SIGTERM: {logged}: {verdict}"
        )

        # MLServer 1.7: official sklearn runtime and a minimal ONNX runtime, same load
        mlserver = ensure_mlserver()
        port = free_port()
        repo = mlserver_repo(folder, onnx_path, joblib_path, port)
        proc = subprocess.Popen(
            [str(mlserver), "start", str(repo)], cwd=repo,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc, 300)
            for model in ("churn", "churn-onnx"):
                httpx.post(
                    f"http://127.0.0.1:{port}/v2/models/{model}/infer", content=body(1), timeout=60
                ).raise_for_status()
            print("MLServer 1.7 (sklearn runtime)", flush=True)
            table["mlserver-sklearn"] = run_all(
                "mlserver-sklearn",
                f"http://127.0.0.1:{port}/v2/models/churn/infer",
                args.seconds,
                folder,
                args.runs,
            )
            print("MLServer 1.7 (custom ONNX runtime)", flush=True)
            table["mlserver-onnx"] = run_all(
                "mlserver-onnx",
                f"http://127.0.0.1:{port}/v2/models/churn-onnx/infer",
                args.seconds,
                folder,
                args.runs,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    print()
    print(
        "| scenario | eventml req/s | p99 ms | MLServer sklearn req/s | p99 ms | MLServer ONNX req/s | p99 ms | req/s ratio (vs best MLServer) | p99 ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, conc, _ in SCENARIOS:
        e = table["eventml"][(kind, conc)]
        s = table["mlserver-sklearn"][(kind, conc)]
        o = table["mlserver-onnx"][(kind, conc)]
        best = max(s, o, key=lambda r: r["rps"])
        print(
            f"| {kind} c={conc} | {e['rps']:.0f} | {e['p99_ms']:.2f} | {s['rps']:.0f} | {s['p99_ms']:.2f} | "
            f"{o['rps']:.0f} | {o['p99_ms']:.2f} | {e['rps'] / best['rps']:.1f}× | {e['p99_ms'] / best['p99_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
