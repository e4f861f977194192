"""The demo: synthetic churn customers sent through the embedded log, then the log inspected.

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
from pathlib import Path

import numpy as np
from rich.console import Console

from eventml.config import Settings
from eventml.ingest import SendOptions, send_file
from eventml.log import open_log

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


def write_customers_csv(path: Path, n: int, seed: int = 0, bad_lines: bool = True) -> None:
    """A CSV of customers keyed by ``customer_id``; with ``bad_lines``, three malformed rows."""
    x, _ = churn_customers(n, seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", *FEATURES])
        for i in range(n):
            w.writerow([f"c{i:06d}", *(repr(float(x[name][i])) for name in FEATURES)])
        if bad_lines:
            w.writerow(["c-bad-1", *(["1.0"] * (len(FEATURES) - 1))])
            w.writerow(["c-bad-2", "twelve", *(["1.0"] * (len(FEATURES) - 1))])
            w.writerow(["c-bad-3", "", *(["1.0"] * (len(FEATURES) - 1))])


def run_demo(folder: str, console: Console) -> None:
    """Send synthetic customers to the ``churn`` endpoint and show what the log holds."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / "customers.csv"
    write_customers_csv(csv_path, 5_000, seed=1)
    console.print(f"[bold]1.[/] wrote 5,000 synthetic customers (+3 malformed rows) to {csv_path}")
    with open_log(str(root / "log"), Settings.from_env(log=str(root / "log"))) as log:
        summary = send_file(log, csv_path, SendOptions(endpoint="churn", key_column="customer_id"))
        console.print(
            f"[bold]2.[/] eventml send churn: accepted {summary.accepted}, "
            f"rejected {summary.rejected} (each rejection is in topic deadletter with its reason):"
        )
        for reason in summary.reasons:
            console.print(f"     {reason}", markup=False, highlight=False)
        console.print(f"[bold]3.[/] the log in {root / 'log'}:")
        for topic, parts in log.topics().items():
            ends = log.end_offsets(topic)
            console.print(f"     {topic}: {parts} partition(s), {sum(ends)} events")
    console.print(
        f"Look further: eventml log info --data {root / 'log'}; "
        f"eventml log read deadletter --data {root / 'log'}"
    )
