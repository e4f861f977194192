"""The serving commands as a user runs them: deploy, run, predictions, stats."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

WINE = Path(__file__).parents[3] / "shared" / "data" / "wine"
LR = WINE / "models" / "winequalityLinearRegression.pmml"


def cli(*args: str, data: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTML_LOG": str(data), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "eventml.cli", *args], capture_output=True, text=True, env=env,
        timeout=180, check=check,
    )  # fmt: skip


def prepared(tmp_path: Path) -> Path:
    data = tmp_path / "log"
    rows = (WINE / "winequality_red_names.csv").read_text().splitlines()
    small = tmp_path / "wine.csv"
    small.write_text("\n".join(rows[:11]) + "\n")
    cli("models", "push", str(LR), "--name", "wine-lr", data=data)
    assert cli("deploy", "wine", "--champion", "wine-lr", data=data).stdout.strip() == (
        "wine: route 1 → champion wine-lr:1"
    )
    cli("send", "wine", str(small), "--sep", ";", "--exclude", "quality", data=data)
    assert (
        cli("run", "--until-idle", data=data).stderr.strip() == "scored 10 records (group engine)"
    )
    return data


def test_predictions_export_in_three_formats(tmp_path: Path) -> None:
    data = prepared(tmp_path)
    lines = cli("predictions", "wine", data=data).stdout.splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 10
    assert list(first) == [
        "record_id", "endpoint", "key", "ts", "scored_at", "source", "status", "model",
        "version", "digest", "output", "latency_ms", "policy", "route_version", "features",
        "scores",
    ]  # fmt: skip
    assert first["output"] == {"value": 5.178126058334128}
    assert first["source"] == {"topic": "records", "partition": 0, "offset": 0}
    assert first["features"]["citric acid"] == 0  # an int stays an int

    text = cli("predictions", "wine", "--format", "csv", data=data).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 10
    assert rows[0]["record_id"] == first["record_id"]
    assert json.loads(rows[0]["output"]) == {"value": 5.178126058334128}
    assert json.loads(rows[0]["features"]) == first["features"]

    out = tmp_path / "p.parquet"
    result = cli("predictions", "wine", "--format", "parquet", "--out", str(out), data=data)
    assert result.stderr.strip() == f"10 predictions → {out}"
    table = pq.read_table(out)
    assert table.num_rows == 10
    assert table.column("record_id").to_pylist()[0] == first["record_id"]
    assert table.column("version").to_pylist() == [1] * 10

    later = cli("predictions", "wine", "--since", "2999-01-01T00:00:00Z", data=data).stdout
    assert later == ""
    assert cli("predictions", "other", data=data).stdout == ""


def test_serving_command_errors_are_one_line(tmp_path: Path) -> None:
    data = prepared(tmp_path)
    cases = [
        (
            ["deploy", "wine", "--champion", "nope"],
            "error: expected a pushed model, got 'nope'; known: ['wine-lr']",
        ),
        (
            ["deploy", "wine", "--champion", "wine-lr:7"],
            "error: expected a version of 'wine-lr' among [1], got 7",
        ),
        (
            ["predictions", "wine", "--format", "xml"],
            'error: expected --format jsonl, csv or parquet, got "xml"',
        ),
        (
            ["predictions", "wine", "--format", "parquet"],
            "error: expected --out FILE for parquet, got stdout",
        ),
        (
            ["predictions", "wine", "--since", "yesterday"],
            "error: expected an RFC 3339 time, got 'yesterday' (--since)",
        ),
    ]
    for args, message in cases:
        result = cli(*args, data=data, check=False)
        assert (result.returncode, result.stderr.strip()) == (2, message), args


def test_deploy_at_token_says_where_the_tokens_are(tmp_path: Path) -> None:
    data = prepared(tmp_path)
    result = cli("deploy", "wine", "--champion", "wine-lr", "--at-token", "--json", data=data)
    route = json.loads(result.stdout)
    assert (route["version"], route["champion"], route["at_token"]) == (2, "wine-lr:1", True)
    assert route["token_offsets"] == {"0": 10}
    events = [
        json.loads(line)
        for line in cli("log", "read", "records", "--from", "10", data=data).stdout.splitlines()
    ]
    assert [(e["offset"], e["event"]["type"], e["event"]["route_version"]) for e in events] == [
        (10, "SwapToken", 2)
    ]


def test_route_files_flags_show_and_rollback(tmp_path: Path) -> None:
    data = prepared(tmp_path)
    cli(
        "models",
        "push",
        str(WINE / "models" / "winequalityDesisionTreeRegression.pmml"),
        "--name",
        "tree",
        data=data,
    )
    spec = tmp_path / "route.json"
    spec.write_text(json.dumps({"champion": "wine-lr", "shadow": ["tree"], "decoy": True}))
    assert cli("deploy", "wine", "--route", str(spec), data=data).stdout.strip() == (
        'wine: route 2 → {"champion":"wine-lr:1","shadow":["tree:1"],"decoy":true}'
    )
    assert cli(
        "deploy", "wine", "--split", "wine-lr=90%", "--split", "tree=10%", data=data
    ).stdout.strip() == (
        'wine: route 3 → {"split":{"wine-lr:1":90.0,"tree:1":10.0},"decider":"split"}'
    )
    shown = json.loads(cli("route", "show", "wine", "--json", data=data).stdout)
    assert [r["version"] for r in shown["history"]] == [1, 2, 3]
    assert shown["current"]["spec"] == {
        "split": {"wine-lr:1": 90.0, "tree:1": 10.0},
        "decider": "split",
    }
    assert (
        cli("rollback", "wine", data=data).stdout.strip() == "wine: route 4 (rollback to route 2)"
    )
    shown = json.loads(cli("route", "show", "wine", "--json", data=data).stdout)
    assert shown["current"]["spec"] == {
        "champion": "wine-lr:1",
        "shadow": ["tree:1"],
        "decoy": True,
    }
    bad = cli("deploy", "wine", "--split", "tree", data=data, check=False)
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        'error: expected --split NAME[:VERSION]=PCT%, got "tree"',
    )
    none = cli("route", "show", "nope", data=data, check=False)
    assert none.stderr.strip() == "error: expected a deployed endpoint, got 'nope' with no route"
