"""``eventml send`` and ``eventml log``: files into records, bad lines into deadletter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import InputError
from eventml.ingest import SendOptions, send_file
from eventml.log import Log, open_log

WINE = Path(__file__).parents[2] / "shared" / "data" / "wine"
WINE_COLUMNS = (
    "fixed acidity,volatile acidity,citric acid,residual sugar,chlorides,free sulfur dioxide,"
    "total sulfur dioxide,density,pH,sulphates,alcohol,quality"
)
EVENTML = [sys.executable, "-m", "eventml.cli"]


def run(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process, as a user runs it."""
    env = {**os.environ, "EVENTML_LOG": str(data), "COLUMNS": "200"}
    return subprocess.run([*EVENTML, *args], capture_output=True, text=True, env=env, timeout=120)


def records(log: Log) -> list[ev.Record]:
    return [ev.decode(v) for b in log.read_all("records") for v in b.values]


def dead_letters(log: Log) -> list[ev.DeadLetter]:
    return [ev.decode(v) for b in log.read_all("deadletter") for v in b.values]


def test_shared_error_file_exact_counts_and_dead_letters(tmp_path: Path) -> None:
    path = WINE / "error_winequality_red.csv"
    result = run(
        "send",
        "wine",
        str(path),
        "--sep",
        ";",
        "--columns",
        WINE_COLUMNS,
        "--exclude",
        "quality",
        data=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "error_winequality_red.csv → wine: accepted 2, rejected 12" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    with open_log(str(tmp_path), Settings()) as log:
        dead = dead_letters(log)
        recs = records(log)
    names = WINE_COLUMNS.split(",")
    assert [d.line for d in dead] == list(range(2, 14))
    assert dead[0].reason == "expected 12 fields, got 10 (line 2 of error_winequality_red.csv)"
    for d, feature in zip(dead[1:], names[:11], strict=True):
        assert d.reason == (
            f"expected a number for feature {feature!r}, got an empty field "
            f"(line {d.line} of error_winequality_red.csv)"
        )
    raw_lines = path.read_bytes().split(b"\n")
    assert [d.raw for d in dead] == raw_lines[1:13]
    assert all(d.file == str(path) and d.endpoint == "wine" for d in dead)
    # line 14 lacks only the label, which is excluded: a valid record to score
    assert [r.features["alcohol"] for r in recs] == [9.4, 9.4]
    assert all("quality" not in r.features for r in recs)


def test_every_kind_of_bad_line(tmp_path: Path) -> None:
    csv_file = tmp_path / "mixed.csv"
    csv_file.write_bytes(
        b"id,a,b,kind\n"
        b"r1,1.5,2,x\n"  # good
        b"r2,1.5\n"  # missing fields
        b"r3,abc,2,x\n"  # non-numeric value
        b"r4,1.5,,x\n"  # empty field
        b"r5,caf\xe9,2,x\n"  # bad encoding
        b"r6,nan,2,x\n"  # not finite
        b"\n"  # blank: skipped
        b"r7,-3e2,7,y\n"  # good
    )
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(
        b'{"features": {"a": 1, "b": "t"}, "id": "j1", "key": "k1", "ts": "2026-05-01T10:00:00Z"}\n'
        b'{"a": 1.5, "b": true}\n'  # flat: all features
        b'{"features": {"a": 1}, "id": "j3"\n'  # broken JSON
        b'{"features": {"a": [1, 2]}}\n'  # not a scalar
        b"[1, 2]\n"  # not an object
        b'{"features": {"a": 1}, "extra": 2}\n'  # unknown top-level field
        b'{"features": {"a": 1}, "ts": "2026-05-01 10:00"}\n'  # no time zone
        b'{"a": "\xff"}\n'  # bad encoding
    )
    with open_log(str(tmp_path / "log"), Settings()) as log:
        s1 = send_file(
            log,
            csv_file,
            SendOptions(endpoint="e", id_column="id", text_columns=frozenset({"kind"})),
        )
        s2 = send_file(log, jsonl, SendOptions(endpoint="e"))
        recs = records(log)
        dead = dead_letters(log)
    assert (s1.accepted, s1.rejected, s2.accepted, s2.rejected) == (2, 5, 2, 6)
    assert [(r.id, r.features) for r in recs[:2]] == [
        ("r1", {"a": 1.5, "b": 2, "kind": "x"}),
        ("r7", {"a": -300.0, "b": 7, "kind": "y"}),
    ]
    j1, j2 = recs[2:]
    assert (j1.id, j1.key, j1.ts, j1.features) == (
        "j1",
        "k1",
        ev.parse_time("2026-05-01T10:00:00Z"),
        {"a": 1, "b": "t"},
    )
    assert j2.features == {"a": 1.5, "b": True}
    assert len(j2.id) == 32
    reasons = [d.reason for d in dead]
    assert reasons[:5] == [
        "expected 4 fields, got 2 (line 3 of mixed.csv)",
        "expected a number for feature 'a', got \"abc\" (line 4 of mixed.csv)",
        "expected a number for feature 'b', got an empty field (line 5 of mixed.csv)",
        "expected UTF-8 text, got byte 0xe9 at column 7 (line 6 of mixed.csv)",
        "expected a finite number for feature 'a', got \"nan\" (line 7 of mixed.csv)",
    ]
    assert reasons[5].startswith("expected a JSON object, got invalid JSON: ")
    assert reasons[5].endswith("(line 3 of mixed.jsonl)")
    assert reasons[6:] == [
        "expected a number, string, boolean or null for feature 'a', got a list "
        "(line 4 of mixed.jsonl)",
        "expected a JSON object, got a list (line 5 of mixed.jsonl)",
        "expected only features, id, key and ts, got fields ['extra'] (line 6 of mixed.jsonl)",
        "expected an RFC 3339 time with a zone (Z or +HH:MM), got '2026-05-01 10:00' "
        "(line 7 of mixed.jsonl)",
        "expected UTF-8 text, got byte 0xff at column 8 (line 8 of mixed.jsonl)",
    ]
    assert dead[3].raw == b"r5,caf\xe9,2,x"
    assert dead[3].text == "r5,caf\\xe9,2,x"


def test_missing_values_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("a,b\n1,\nNA,2\n")
    with open_log("memory://", Settings()) as log:
        s = send_file(log, path, SendOptions(endpoint="e", missing=frozenset({"", "NA"})))
        assert (s.accepted, s.rejected) == (2, 0)
        assert [r.features for r in records(log)] == [{"a": 1, "b": None}, {"a": None, "b": 2}]


def test_keys_partition_records_by_entity(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("cust,x\n" + "".join(f"c{i % 5},{i}\n" for i in range(50)))
    with open_log(str(tmp_path / "log"), Settings(partitions=3)) as log:
        send_file(log, path, SendOptions(endpoint="e", key_column="cust"))
        by_key: dict[str, set[int]] = {}
        order: dict[str, list[float | int | str | bool | None]] = {}
        for p in range(3):
            for v in log.read("records", p).values:
                r = ev.decode(v)
                by_key.setdefault(r.key, set()).add(p)
                order.setdefault(r.key, []).append(r.features["x"])
    assert all(len(parts) == 1 for parts in by_key.values())
    assert order["c3"] == [3, 8, 13, 18, 23, 28, 33, 38, 43, 48]  # per-entity order holds


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    table = pa.table(
        {"id": ["a", "b", "c"], "x": [1.5, None, 3.0], "n": [1, 2, 3], "tags": [[1], [2], [3]]}
    )
    pq.write_table(table.drop_columns(["tags"]), path)
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad)
    with open_log("memory://", Settings()) as log:
        s = send_file(log, path, SendOptions(endpoint="e", id_column="id"))
        assert (s.accepted, s.rejected) == (3, 0)
        assert [(r.id, r.features) for r in records(log)] == [
            ("a", {"x": 1.5, "n": 1}),
            ("b", {"x": None, "n": 2}),
            ("c", {"x": 3.0, "n": 3}),
        ]
        s = send_file(log, bad, SendOptions(endpoint="e", id_column="id"))
        assert (s.accepted, s.rejected) == (0, 3)
        assert dead_letters(log)[0].reason == (
            "expected a number, string, boolean or null for feature 'tags', got a list "
            "(row 1 of bad.parquet)"
        )


def test_wine_file_with_header(tmp_path: Path) -> None:
    result = run(
        "send",
        "wine",
        str(WINE / "winequality_red_names.csv"),
        "--sep",
        ";",
        "--exclude",
        "quality",
        "--json",
        data=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["rejected"]) == (1599, 0)
    info = run("log", "info", "--json", data=tmp_path)
    got = json.loads(info.stdout)
    assert got["topics"] == {"records": {"partitions": 1, "end_offsets": [1599], "entries": 1599}}
    assert got["groups"] == []


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    cases = [
        (["send", "wine", str(tmp_path / "nope.csv")], 'expected an existing file, got "'),
        (["send", "bad name!", str(WINE / "winequality_red.csv")], "expected an endpoint name"),
        (["send", "wine", str(WINE / "models" / "optimized_WineQuality.pb")], "expected a .csv"),
        (["send", "w", str(WINE / "winequality_red.csv"), "--text", "zzz"], "expected columns"),
        (["log", "read", "nope"], "expected one of the topics"),
    ]
    for args, message in cases:
        result = run(*args, data=tmp_path / "log")
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith(f"error: {message}"), result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_log_info_shows_groups_and_lag(tmp_path: Path) -> None:
    with open_log(str(tmp_path), Settings()) as log:
        log.append("records", [b"x"] * 5)
        with log.consumer("engine", ["records"]) as c:
            c.commit({("records", 0): 3})
    got = json.loads(run("log", "info", "--json", data=tmp_path).stdout)
    assert got["groups"] == [
        {"group": "engine", "topic": "records", "partition": 0, "committed": 3, "end": 5, "lag": 2}
    ]
    table = run("log", "info", data=tmp_path).stdout
    assert "engine" in table
    assert "records" in table


def test_log_read_prints_events_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('{"features": {"a": 1}, "id": "x1", "ts": "2026-01-01T00:00:00Z"}\n')
    assert run("send", "e", str(path), data=tmp_path / "log").returncode == 0
    lines = run("log", "read", "records", data=tmp_path / "log").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "partition": 0,
            "offset": 0,
            "event": {
                "type": "Record",
                "id": "x1",
                "endpoint": "e",
                "key": None,
                "ts": "2026-01-01T00:00:00Z",
                "features": {"a": 1},
                "answered": False,
            },
        }
    ]


def test_header_errors_stop_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b"a,\xff\n1,2\n")
    with open_log("memory://", Settings()) as log, pytest.raises(InputError) as err:
        send_file(log, path, SendOptions(endpoint="e"))
    assert str(err.value) == (
        f"expected a header row, got expected UTF-8 text, got byte 0xff at column 3 "
        f"(line 1 of {path})"
    )
