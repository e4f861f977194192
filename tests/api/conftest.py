"""A real uvicorn server on 127.0.0.1 in a thread, over a real SQLite log, with real models.

``make_server(...)`` starts one per test (its own log folder, its own token file) and
stops it at the end; the server's lifespan runs as in ``eventml serve`` (writer, rendezvous,
optionally the stream engine), and stopping flushes the writer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from skl2onnx import to_onnx
from sklearn.tree import DecisionTreeClassifier

from eventml import events as ev
from eventml.api import ApiOptions, TokenStore, create_app
from eventml.api.server import uvicorn_config
from eventml.config import Settings
from eventml.demo import FEATURES, churn_customers
from eventml.log import Log, open_log

WINE = Path(__file__).parents[3] / "shared" / "data" / "wine"
WINE_LR = WINE / "models" / "winequalityLinearRegression.pmml"
WINE_NAMES = ("fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
              "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol")  # fmt: skip


def wine_rows(n: int) -> list[dict[str, float]]:
    lines = (WINE / "winequality_red.csv").read_text().strip().split("\n")[:n]
    return [dict(zip(WINE_NAMES, map(float, line.split(";")[:11]), strict=True)) for line in lines]


def train_churn_onnx(path: Path, seed: int = 0, depth: int = 6) -> None:
    """A churn classifier (20 float features) as ONNX: zipmap off, feature names in metadata."""
    x, y = churn_customers(2_000, seed=seed)
    matrix = np.column_stack([x[f] for f in FEATURES]).astype(np.float32)
    model = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(matrix, y)
    onx = to_onnx(model, matrix[:1], options={"zipmap": False}, target_opset=17)
    meta = onx.metadata_props.add()
    meta.key, meta.value = "feature_names", ev.to_json(list(FEATURES)).decode()  # type: ignore[arg-type]
    path.write_bytes(onx.SerializeToString())


def churn_rows(n: int, seed: int = 5) -> list[dict[str, float]]:
    x, _ = churn_customers(n, seed=seed)
    matrix = np.column_stack([x[f] for f in FEATURES]).astype(np.float32).astype(np.float64)
    return [dict(zip(FEATURES, row, strict=True)) for row in matrix.tolist()]


@dataclass
class Server:
    """A running server: its URL, log, tokens by role and the uvicorn handle."""

    url: str
    log: Log
    folder: Path
    tokens: dict[str, str]
    uv: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    app: object = field(repr=False)

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role in self.tokens else {}

    def stop(self) -> None:
        self.uv.should_exit = True
        self.thread.join(30)
        self.sock.close()


def start_server(
    folder: Path,
    setup: Callable[[Log], None] | None = None,
    *,
    auth: bool = True,
    options: ApiOptions | None = None,
) -> Server:
    """A server over a SQLite log in ``folder`` (``setup`` runs on the log first)."""
    settings = Settings.from_env(log=str(folder))
    log = open_log(str(folder), settings)
    if setup is not None:
        setup(log)
    store = TokenStore(folder / "tokens.json")
    tokens = {role: store.create(role) for role in ("read", "predict", "admin")} if auth else {}
    opts = options or ApiOptions(log_url=str(folder))
    app = create_app(log, settings, auth=store if auth else None, options=opts)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(app, opts)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            log.close()
            raise RuntimeError("expected the server to start, got it stopped")
        time.sleep(0.01)
    return Server(f"http://127.0.0.1:{port}", log, folder, tokens, uv, thread, sock, app)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(
        setup: Callable[[Log], None] | None = None,
        *,
        auth: bool = True,
        options: ApiOptions | None = None,
        folder: Path | None = None,
    ) -> Server:
        server = start_server(
            folder or tmp_path / f"log{len(started)}", setup, auth=auth, options=options
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.log.close()
