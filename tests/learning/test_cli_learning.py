"""The learning commands as a user runs them: label, view, train, replay, promote, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eventml.config import Settings
from eventml.learning.views import ViewSpec, build_view
from eventml.log import open_log
from tests.learning.helpers import write_predictions

# eventml.cli wires register(app); registering here too keeps this test independent of that
RUN = (
    "import sys; from eventml.cli import app, main; from eventml.learning.cli import register\n"
    "if not any(c.name == 'label' for c in app.registered_commands): register(app)\n"
    "main()"
)


def cli(*args: str, data: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTML_LOG": str(data), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env,
        timeout=300, check=check,
    )  # fmt: skip


def test_label_view_train_replay_promote(tmp_path: Path) -> None:
    data = tmp_path / "log"
    with open_log(str(data), Settings()) as log:
        preds = write_predictions(log, 400)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "record_id,value\n"
        + "".join(f"{p.record_id},{i % 3 == 0:d}\n" for i, p in enumerate(preds[:300]))
    )
    done = cli("label", str(labels), data=data)
    assert (
        done.stdout
        == "labels.csv: appended 300 labels (300 by record, 0 by entity) to topic labels\n"
    )

    first = cli(
        "view", "churn", "--out", str(tmp_path / "v.parquet"), data=data
    ).stdout.splitlines()
    second = cli("view", "churn", data=data).stdout.splitlines()
    with open_log(str(data), Settings()) as log:
        built = build_view(log, ViewSpec(endpoint="churn"))
    expected = built.hash
    assert built.cutoff is not None
    assert first[0] == second[0] == f"300 rows  sha256:{expected}"
    assert first[1].startswith("  train 240, validation 60 (from ")

    trained = json.loads(
        cli("train", "churn", "--view", str(tmp_path / "v.parquet"), "--name", "churn",
            "--algo", "logreg", "--json", data=data).stdout
    )  # fmt: skip
    assert (trained["model"], trained["view"], trained["parent_version"]) == (
        "churn:1",
        expected,
        None,
    )
    assert trained["classes"] == ["0", "1"]
    assert trained["metrics"]["rows_validation"] == 60.0
    assert trained["held_out_from"] == built.cutoff.isoformat()

    plot = tmp_path / "replay.html"
    rep = json.loads(
        cli(
            "replay", "churn:1", "--endpoint", "churn", "--json", "--plot", str(plot), data=data
        ).stdout
    )
    assert (rep["candidate"], rep["kind"], rep["positive"]) == ("churn:1", "classification", "1")
    m = rep["metrics"]
    assert (m["rows"], m["labelled"], m["compared"]) == (400.0, 300.0, 300.0)
    assert "served_auc" not in m  # nothing was served: status no_model
    assert plot.read_text().startswith("<!doctype html>")

    promoted = json.loads(
        cli("promote", "churn", "churn:1", "--require", "auc > 0.5", "--json", data=data).stdout
    )
    assert promoted["route"]["version"] == 1
    assert promoted["route"]["champion"] == "churn:1"
    assert promoted["checks"][0].startswith("auc > 0.5: ")

    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,value\nnope,1\n")
    failed = cli("label", str(bad), data=data, check=False)
    assert failed.returncode == 2
    assert failed.stderr == (
        "error: expected labels for predicted records, got 1 unknown record id(s): nope\n"
    )
    refused = cli("promote", "churn", "churn:1", "--require", "auc > 0.99", data=data, check=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "error: refused to promote churn:1 on 'churn': the replay gate 'auc > 0.99' failed (auc > 0.99: "
    )
    assert refused.stderr.count("\n") == 1
