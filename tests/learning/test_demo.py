"""``make demo``: the churn story end to end on the embedded log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

from eventml.config import Settings
from eventml.demo import run_demo
from eventml.errors import ConfigError
from eventml.log import open_log
from eventml.models.registry import Registry
from eventml.serving.spec import spec_of


def test_demo_tells_the_churn_story(tmp_path: Path) -> None:
    console = Console(record=True, width=400, color_system=None)
    run_demo(str(tmp_path / "demo"), console)
    text = console.export_text()
    lines = text.splitlines()
    assert (
        lines[0]
        == f"1. 2,000 customers arrive before any model ({tmp_path / 'demo' / 'customers-first.csv'})"
    )
    assert "     engine: scored 2,000 records (status no_model: nothing serves yet)" in lines
    assert (
        "3. eventml send churn customers.csv: accepted 10,000, rejected 3 (each rejection is in "
        "topic deadletter with its reason):"
    ) in lines
    assert "     expected 22 fields, got 21 (line 10002 of customers.csv)" in lines
    assert (
        "     expected a number for feature 'tenure_months', got \"twelve\" (line 10003 of customers.csv)"
        in lines
    )
    assert "     engine: scored 10,000 records with churn:1" in lines
    assert (
        "4. outcomes arrive 14 days after scoring: by day 60, 7,201 of 10,000 are known; eventml label outcomes.csv"
        in lines
    )
    replayed = next(line for line in lines if line.startswith("6. replay of churn:2"))
    auc, served = map(float, re.findall(r"AUC ([0-9.]+) vs served ([0-9.]+)", replayed)[0])
    assert auc > served + 0.005
    assert any(line.startswith("7. eventml promote churn churn:2 --as canary:20") for line in lines)
    assert "     eventml promote churn churn:2 --as champion: route 3 → churn:2" in lines
    for name in ("customers.csv", "outcomes.csv", "view.parquet", "replay.html"):
        assert (tmp_path / "demo" / name).is_file()
    with open_log(str(tmp_path / "demo" / "log"), Settings()) as log:
        routes = Registry.from_log(log).routes["churn"]
        assert [spec_of(r).champion for r in routes] == ["churn:1", "churn:1", "churn:2"]
        assert sum(log.end_offsets("deadletter")) == 3
    # a second run starts from an empty log, not on top of the first
    run_demo(str(tmp_path / "demo"), Console(record=True, width=400, color_system=None))
    with open_log(str(tmp_path / "demo" / "log"), Settings()) as log:
        assert sum(log.end_offsets("records")) == 12_000


def test_demo_refuses_a_log_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "other" / "log").mkdir(parents=True)
    with pytest.raises(ConfigError) as exc:
        run_demo(str(tmp_path / "other"), Console(record=True))
    assert str(exc.value) == (
        f"expected a new folder or one an earlier demo made, got {tmp_path / 'other'} with a log "
        "in it that the demo did not write; pick another --data"
    )
    assert (tmp_path / "other" / "log").is_dir()
