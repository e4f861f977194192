"""The demo: the churn story end to end on the embedded log (``make demo``).

:func:`run_demo`, in about a minute: 2,000 customers arrive before any model (scored
``no_model``), their churn outcomes are labelled per customer, a first model ``churn:1``
(logistic regression on three features) is trained on that view, pushed and deployed;
10,000 more customers (plus three malformed rows, shown in ``deadletter``) are streamed and
scored by the engine; the outcomes known so far are labelled; ``churn:2`` (gradient boosting
on every feature) is trained on the view, replayed over the held-out events, promoted as a
canary behind a replay gate and then as champion; a short report says where to look.

The generator (:func:`churn_customers`) is the talks' churn story in numbers: 20 numeric
features per customer, drawn with a fixed seed, and a ground truth that depends on a few
of them through a known logistic model, so a trained classifier has something real to find:

    logit = -0.6 + 1.1 * support_calls_90d / 3 - 0.9 * tenure_months / 24
            + 0.8 * (monthly_charges - 70) / 30 - 0.7 * contract_years
            + 0.6 * payment_failures_90d + 0.5 * (last_login_days > 14) + noise(0, 0.3)
    churned = uniform() < sigmoid(logit)

The remaining features are plausible noise. About a quarter of customers churn.

>>> x, y = churn_customers(1000, seed=7)
>>> len(x), len(y), round(float(y.mean()), 2)
(20, 1000, 0.27)
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console

from eventml.config import Settings
from eventml.errors import ConfigError
from eventml.ingest import SendOptions, send_file
from eventml.log import Log, open_log

FEATURES = (
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "contract_years",
    "support_calls_90d",
    "payment_failures_90d",
    "last_login_days",
    "sessions_30d",
    "avg_session_min",
    "devices",
    "data_gb_30d",
    "plan_changes_12m",
    "discount_pct",
    "age",
    "household_size",
    "referrals",
    "nps_score",
    "outage_minutes_30d",
    "autopay",
    "paperless",
)


def churn_customers(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` customers: 20 float feature columns (name → array) and the churn label (0/1)."""
    rng = np.random.default_rng(seed)
    tenure = rng.gamma(2.0, 14.0, n).round(0)
    monthly = rng.normal(70.0, 20.0, n).clip(15, 150).round(2)
    x = {
        "tenure_months": tenure,
        "monthly_charges": monthly,
        "total_charges": (tenure * monthly * rng.uniform(0.9, 1.05, n)).round(2),
        "contract_years": rng.choice([0.0, 1.0, 2.0], n, p=[0.55, 0.25, 0.2]),
        "support_calls_90d": rng.poisson(1.5, n).astype(float),
        "payment_failures_90d": rng.poisson(0.3, n).astype(float),
        "last_login_days": rng.exponential(8.0, n).round(0),
        "sessions_30d": rng.poisson(20, n).astype(float),
        "avg_session_min": rng.gamma(3.0, 4.0, n).round(1),
        "devices": rng.integers(1, 6, n).astype(float),
        "data_gb_30d": rng.gamma(2.0, 6.0, n).round(2),
        "plan_changes_12m": rng.poisson(0.5, n).astype(float),
        "discount_pct": rng.choice([0.0, 5.0, 10.0, 20.0], n, p=[0.6, 0.2, 0.15, 0.05]),
        "age": rng.integers(18, 85, n).astype(float),
        "household_size": rng.integers(1, 7, n).astype(float),
        "referrals": rng.poisson(0.4, n).astype(float),
        "nps_score": rng.integers(0, 11, n).astype(float),
        "outage_minutes_30d": rng.exponential(15.0, n).round(0),
        "autopay": rng.choice([0.0, 1.0], n, p=[0.4, 0.6]),
        "paperless": rng.choice([0.0, 1.0], n, p=[0.3, 0.7]),
    }
    logit = (
        -0.6
        + 1.1 * x["support_calls_90d"] / 3
        - 0.9 * x["tenure_months"] / 24
        + 0.8 * (x["monthly_charges"] - 70) / 30
        - 0.7 * x["contract_years"]
        + 0.6 * x["payment_failures_90d"]
        + 0.5 * (x["last_login_days"] > 14)
        + rng.normal(0.0, 0.3, n)
    )
    churned = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return x, churned


def write_customers_csv(
    path: Path,
    n: int,
    seed: int = 0,
    bad_lines: bool = True,
    *,
    start: int = 0,
    ts: Callable[[int], datetime] | None = None,
) -> None:
    """A CSV of customers keyed by ``customer_id``; with ``bad_lines``, three malformed rows.

    ``start`` numbers the customers from ``c{start:06d}`` (rows ``start..start+n`` of the
    generator's draw of ``start + n`` customers); ``ts`` adds an event-time column ``ts``.
    """
    x, _ = churn_customers(start + n, seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", *(["ts"] if ts else []), *FEATURES])
        for i in range(start, start + n):
            when = [ts(i).isoformat()] if ts else []
            w.writerow([f"c{i:06d}", *when, *(repr(float(x[name][i])) for name in FEATURES)])
        if bad_lines:
            when = [ts(start).isoformat()] if ts else []
            w.writerow(["c-bad-1", *when, *(["1.0"] * (len(FEATURES) - 1))])
            w.writerow(["c-bad-2", *when, "twelve", *(["1.0"] * (len(FEATURES) - 1))])
            w.writerow(["c-bad-3", *when, "", *(["1.0"] * (len(FEATURES) - 1))])


# The story's clock: customers arrive over 60 days from START; a customer's outcome (churned
# or stayed) is known OUTCOME_DELAY after it was scored; "today" is the end of the 60 days.
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 60
OUTCOME_DELAY = timedelta(days=14)
FIRST, SECOND = 2_000, 10_000
SEED = 1
MARKER = ".eventml-demo"

LOOK_HOOKS: list[Callable[[Path], str | None]] = []
"""Lines for "where to look", one hook each (the HTTP server adds its URL here)."""


def _arrival(i: int) -> datetime:
    return START + timedelta(days=DAYS) * (i / (FIRST + SECOND))


def write_outcomes_csv(path: Path, first: int, last: int, today: datetime) -> int:
    """Outcomes known by ``today`` for customers ``first..last`` as entity labels; returns the count."""
    _, churned = churn_customers(FIRST + SECOND, SEED)
    count = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["endpoint", "key", "ts", "value"])
        for i in range(first, last):
            known = _arrival(i) + OUTCOME_DELAY
            if known <= today:
                w.writerow(["churn", f"c{i:06d}", known.isoformat(), int(churned[i])])
                count += 1
    return count


def _fresh(root: Path) -> Path:
    """The demo's log folder, emptied if an earlier demo left one there.

    A folder is the demo's when it holds the marker file (or ``customers.csv``, which earlier
    demos wrote); any other existing log is refused rather than deleted.
    """
    log_dir = root / "log"
    if log_dir.exists():
        if not ((root / MARKER).exists() or (root / "customers.csv").exists()):
            raise ConfigError(
                f"expected a new folder or one an earlier demo made, got {root} with a log in it "
                "that the demo did not write; pick another --data"
            )
        shutil.rmtree(log_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by eventml demo; `eventml demo` empties log/ when it runs\n")
    return log_dir


def run_demo(folder: str, console: Console) -> None:
    """The churn story end to end (module docstring); prints each step and where to look."""
    from eventml.learning.labels import append_labels, read_label_file
    from eventml.learning.promote import promote
    from eventml.learning.replay import replay
    from eventml.learning.report import write_html
    from eventml.learning.train import train
    from eventml.learning.views import ViewSpec, build_view, write_view
    from eventml.serving.routes import deploy

    began = time.perf_counter()
    root = Path(folder)
    log_dir = _fresh(root)
    say = console.print
    first_csv, second_csv = root / "customers-first.csv", root / "customers.csv"
    write_customers_csv(first_csv, FIRST, SEED, bad_lines=False, ts=_arrival)
    write_customers_csv(second_csv, SECOND, SEED, start=FIRST, ts=_arrival)
    opts = SendOptions(
        endpoint="churn", id_column="customer_id", key_column="customer_id", ts_column="ts"
    )
    settings = Settings.from_env(log=str(log_dir), batch_max=2000)
    with open_log(str(log_dir), settings) as log:
        say(f"[bold]1.[/] {FIRST:,} customers arrive before any model ({first_csv})")
        send_file(log, first_csv, opts)
        say(
            f"     engine: scored {_run_engine(log):,} records (status no_model: nothing serves yet)"
        )
        outcomes1 = root / "outcomes-first.csv"
        write_outcomes_csv(outcomes1, 0, FIRST, START + timedelta(days=DAYS))
        s1 = append_labels(log, read_label_file(outcomes1))
        say(f"     eventml label {outcomes1.name}: {s1.appended:,} churn outcomes, one per customer "
            f"(each attaches to the customer's predictions of the 30 days before it)")  # fmt: skip
        v0 = build_view(log, ViewSpec(endpoint="churn"))
        t1 = train(log, "churn", v0, "churn", algo="logreg",
                   features=["tenure_months", "monthly_charges", "contract_years"])  # fmt: skip
        d1 = t1.pushed.descriptor
        deploy(log, "churn", f"churn:{d1.version}", reason="first model")
        say(f"[bold]2.[/] trained churn:{d1.version} (logistic regression, 3 features) on view "
            f"{v0.hash[:12]} ({v0.rows:,} rows): held-out AUC {d1.metrics.get('auc', float('nan')):.3f}; "
            f"pushed and deployed as champion")  # fmt: skip

        summary = send_file(log, second_csv, opts)
        say(f"[bold]3.[/] eventml send churn {second_csv.name}: accepted {summary.accepted:,}, "
            f"rejected {summary.rejected} (each rejection is in topic deadletter with its reason):")  # fmt: skip
        for reason in summary.reasons:
            console.print(f"     {reason}", markup=False, highlight=False)
        say(f"     engine: scored {_run_engine(log):,} records with churn:{d1.version}")

        today = START + timedelta(days=DAYS)
        outcomes2 = root / "outcomes.csv"
        n2 = write_outcomes_csv(outcomes2, FIRST, FIRST + SECOND, today)
        append_labels(log, read_label_file(outcomes2))
        say(f"[bold]4.[/] outcomes arrive {OUTCOME_DELAY.days} days after scoring: by day {DAYS}, "
            f"{n2:,} of {SECOND:,} are known; eventml label {outcomes2.name}")  # fmt: skip

        view = build_view(log, ViewSpec(endpoint="churn", model=f"churn:{d1.version}"))
        view_path = root / "view.parquet"
        write_view(view, view_path)
        t2 = train(log, "churn", view, "churn", algo="hgb")
        d2 = t2.pushed.descriptor
        say(f"[bold]5.[/] eventml view churn: {view.rows:,} labelled predictions, sha256 {view.hash[:16]}…, "
            f"held out from {view.cutoff:%Y-%m-%d %H:%M} ({view_path})")  # fmt: skip
        say(f"     trained churn:{d2.version} (gradient boosting, {len(t2.trained.features)} features), "
            f"parent churn:{t2.parent_version}: held-out AUC {d2.metrics.get('auc', float('nan')):.3f}")  # fmt: skip

        cand = f"churn:{d2.version}"
        r = replay(log, cand, "churn", since=view.cutoff)
        plot = root / "replay.html"
        write_html(r, plot)
        m = r.metrics
        say(f"[bold]6.[/] replay of {cand} over {int(m['rows']):,} events since the cutoff "
            f"({int(m['compared']):,} labelled): AUC {m['auc']:.3f} vs served {m['served_auc']:.3f}, "
            f"log loss {m['log_loss']:.3f} vs {m['served_log_loss']:.3f}, agreement {m['agreement']:.1%}, "
            f"PSI {m['psi']:.3f} ({plot})")  # fmt: skip

        gate = "auc >= served_auc + 0.005"
        canary = promote(log, "churn", cand, as_="canary:20", require=gate, since=view.cutoff)
        say(f"[bold]7.[/] eventml promote churn {cand} --as canary:20 --require '{gate}': "
            f"route {canary.route.version} (churn:{d1.version} 80%, {cand} 20%)")  # fmt: skip
        champ = promote(log, "churn", cand, as_="champion", require=gate, since=view.cutoff)
        say(
            f"     eventml promote churn {cand} --as champion: route {champ.route.version} → {cand}"
        )
        topics = {t: sum(log.end_offsets(t)) for t in log.topics()}
    elapsed = time.perf_counter() - began
    say(f"[bold]Done[/] in {elapsed:.0f} s. The log ({log_dir}) holds "
        + ", ".join(f"{t} {c:,}" for t, c in topics.items()) + ".")  # fmt: skip
    say("Where to look:")
    data = f"--data {log_dir}"
    lines = [
        f"the replay charts: {plot}",
        f"the training view: {view_path} (eventml view churn {data})",
        f"models and lineage: eventml models show {cand} {data}",
        f"dead letters: eventml log read deadletter {data}",
        f"predictions: eventml predictions churn {data}",
    ]
    lines += [line for hook in LOOK_HOOKS if (line := hook(root)) is not None]
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False)


def _run_engine(log: Log) -> int:
    from eventml.serving.engine import Engine

    engine = Engine(log, log.settings)
    try:
        return engine.run(until_idle=True)
    finally:
        engine.close()
