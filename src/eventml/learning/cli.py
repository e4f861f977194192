"""The learning-loop commands: ``label``, ``view``, ``train``, ``replay``, ``promote``.

``register(app)`` adds them to the ``eventml`` command (``eventml.cli`` calls it). Like
every command they take ``--data`` (or ``EVENTML_LOG``) and ``--json``; user errors are
:class:`~eventml.errors.EventmlError` (one line, exit status 2, printed by ``eventml.cli``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from eventml import events as ev
from eventml._cli_options import DataOpt, JsonOpt
from eventml.config import Settings
from eventml.errors import InputError
from eventml.log import Log, open_log

out = Console()
err = Console(stderr=True)

SinceOpt = Annotated[
    str | None, typer.Option(help="Only records with event time at or after (RFC 3339).")
]
UntilOpt = Annotated[
    str | None, typer.Option(help="Only records with event time before (RFC 3339).")
]


def _open(data: str | None) -> Log:
    return open_log(data, Settings.from_env(log=data))


def _time(text: str | None, flag: str) -> datetime | None:
    return ev.parse_time(text, where=flag) if text else None


def _print_json(data: Any) -> None:
    out.print_json(msgspec.json.encode(data).decode())


@contextmanager
def _progress(what: str, json: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (only on a terminal and without --json)."""
    with Progress(
        TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=json or not err.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        table.add_row(k, f"{metrics[k]:.6g}")
    return table


def register(app: typer.Typer) -> None:
    """Add ``label``, ``view``, ``train``, ``replay`` and ``promote`` to ``app``."""
    app.command("label")(label)
    app.command("view")(view)
    app.command("train")(train)
    app.command("replay")(replay)
    app.command("promote")(promote)


def label(
    file: Annotated[
        Path, typer.Argument(help="CSV or JSONL: record_id,value[,ts] or endpoint,key,ts,value.")
    ],
    data: DataOpt = None,
    window: Annotated[
        str,
        typer.Option(
            help="Entity labels attach to the key's predictions with ts in [ts - WINDOW, ts]."
        ),
    ] = "30d",
    json: JsonOpt = False,
) -> None:
    """Append labels (ground truth) to the labels topic; unknown records refuse the file."""
    from eventml.learning.labels import append_labels, parse_window, read_label_file

    labels = read_label_file(file, window=parse_window(window))
    with _open(data) as log:
        summary = append_labels(log, labels)
    if json:
        _print_json(summary)
        return
    out.print(
        f"{file.name}: appended {summary.appended} labels ({summary.by_record} by record, "
        f"{summary.by_entity} by entity) to topic labels",
        highlight=False,
    )


def _spec(
    endpoint: str,
    since: str | None,
    until: str | None,
    model: str | None,
    status: str | None,
    sample: float | None,
    stratify: bool,
    seed: int,
    validation: float,
    split_at: str | None,
) -> Any:
    from eventml.learning.views import ViewSpec

    return ViewSpec(
        endpoint=endpoint, since=_time(since, "--since"), until=_time(until, "--until"),
        model=model, status=status, sample=sample, stratify=stratify, seed=seed,
        validation=validation, split_at=_time(split_at, "--split-at"),
    )  # fmt: skip


ModelOpt = Annotated[str | None, typer.Option(help="Only predictions answered by NAME[:VERSION].")]
StatusOpt = Annotated[
    str | None, typer.Option(help="Only predictions with this status (ok, no_model…).")
]
SampleOpt = Annotated[float | None, typer.Option(help="Keep this fraction of the rows (0..1].")]
StratifyOpt = Annotated[bool, typer.Option("--stratify", help="Sample each label class alike.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the sampling (and of training).")]
ValidationOpt = Annotated[
    float, typer.Option(help="Latest fraction of rows held out for validation.")
]
SplitAtOpt = Annotated[
    str | None, typer.Option(help="Hold out rows at or after this time instead.")
]


def view(
    endpoint: Annotated[
        str, typer.Argument(help="The endpoint whose predictions to join with labels.")
    ],
    data: DataOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    model: ModelOpt = None,
    status: StatusOpt = None,
    sample: SampleOpt = None,
    stratify: StratifyOpt = False,
    seed: SeedOpt = 0,
    validation: ValidationOpt = 0.2,
    split_at: SplitAtOpt = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the view as Parquet.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Build the training view: labelled predictions, features as seen; prints rows and hash."""
    from eventml.learning.views import build_view, write_view

    spec = _spec(
        endpoint, since, until, model, status, sample, stratify, seed, validation, split_at
    )
    with _open(data) as log:
        v = build_view(log, spec)
    if out_file is not None:
        write_view(v, out_file)
    train_rows = v.split("train").num_rows
    info = {
        "rows": v.rows, "hash": v.hash, "train": train_rows, "validation": v.rows - train_rows,
        "cutoff": v.cutoff.isoformat() if v.cutoff else None, "labels": v.labels,
        "features": v.features, "out": str(out_file) if out_file else None,
    }  # fmt: skip
    if json:
        _print_json(info)
        return
    out.print(f"{v.rows} rows  sha256:{v.hash}", highlight=False)
    out.print(
        f"  train {train_rows}, validation {v.rows - train_rows}"
        + (f" (from {info['cutoff']})" if v.cutoff else "")
        + f"; labels {v.labels}"
        + (f" → {out_file}" if out_file else ""),
        highlight=False,
    )


def train(
    endpoint: Annotated[str, typer.Argument(help="The endpoint the model is for.")],
    name: Annotated[str, typer.Option(help="Model name; the new version counts on from it.")],
    data: DataOpt = None,
    view_file: Annotated[
        Path | None, typer.Option("--view", help="A view from eventml view --out.")
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    model: ModelOpt = None,
    status: StatusOpt = None,
    sample: SampleOpt = None,
    stratify: StratifyOpt = False,
    seed: SeedOpt = 0,
    validation: ValidationOpt = 0.2,
    split_at: SplitAtOpt = None,
    algo: Annotated[str, typer.Option(help="hgb, logreg or linear.")] = "hgb",
    target_type: Annotated[
        str | None, typer.Option(help="classification or regression (default: from the labels).")
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Train on these features only: a,b,...")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Train on a view, export ONNX and push it as a new version with its lineage."""
    from eventml.learning.train import train as train_model
    from eventml.learning.views import build_view, read_view

    if target_type not in (None, "classification", "regression"):
        raise InputError(
            f"expected --target-type classification or regression, got {target_type!r}"
        )
    feats = [f.strip() for f in features.split(",")] if features else None
    with _open(data) as log:
        if view_file is not None:
            v = read_view(view_file)
        else:
            spec = _spec(
                endpoint, since, until, model, status, sample, stratify, seed, validation, split_at
            )
            v = build_view(log, spec)
        result = train_model(
            log, endpoint, v, name, algo=algo, target_type=target_type,  # type: ignore[arg-type]
            features=feats, seed=seed,
        )  # fmt: skip
    d = result.pushed.descriptor
    if json:
        _print_json({
            "model": f"{d.name}:{d.version}", "digest": d.digest, "created": result.pushed.created,
            "view": result.view_hash, "parent_version": result.parent_version,
            "held_out_from": v.cutoff.isoformat() if v.cutoff else None,
            "metrics": d.metrics, "features": result.trained.features, "classes": result.trained.classes,
        })  # fmt: skip
        return
    out.print(f"{d.name}:{d.version} {d.digest}", highlight=False)
    if v.cutoff is not None:  # replay --since this time scores only rows it did not train on
        out.print(f"  held out from {v.cutoff.isoformat()} (replay --since it)", highlight=False)
    out.print(
        f"  view {result.view_hash[:12]}, parent {result.parent_version}, "
        f"{result.trained.target_type}, held-out: "
        + ", ".join(f"{k} {v:.4g}" for k, v in sorted(d.metrics.items())),
        highlight=False,
    )


def replay(
    ref: Annotated[str, typer.Argument(help="The candidate NAME:VERSION.")],
    endpoint: Annotated[str, typer.Option(help="Whose past prediction events to replay.")],
    data: DataOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    segment_by: Annotated[
        str | None, typer.Option(help="Also segment by quartiles of this feature.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write an HTML page with the charts.")] = None,
    json: JsonOpt = False,
) -> None:
    """Score past prediction events with a candidate; compare with what was served."""
    from eventml.learning.replay import replay as run_replay
    from eventml.learning.report import write_html

    with _open(data) as log, _progress("replaying", json) as progress:
        r = run_replay(
            log, ref, endpoint, since=_time(since, "--since"), until=_time(until, "--until"),
            segment_by=segment_by, progress=progress,
        )  # fmt: skip
    if plot is not None:
        write_html(r, plot)
    if json:
        _print_json(r.to_dict())
        return
    out.print(_metrics_table(f"replay of {r.candidate} on {endpoint} ({r.kind})", r.metrics))
    seg = Table(title="segments")
    keys = list(dict.fromkeys(k for s in r.segments for k in s))
    for k in keys:
        seg.add_column(k, justify="left" if k in ("by", "segment") else "right")
    for s in r.segments:
        seg.add_row(
            *(f"{s[k]:.4g}" if isinstance(s.get(k), float) else str(s.get(k, "")) for k in keys)
        )
    out.print(seg)
    if plot is not None:
        out.print(f"plot → {plot}", highlight=False)


def promote(
    endpoint: Annotated[str, typer.Argument(help="The endpoint to route.")],
    ref: Annotated[str, typer.Argument(help="The candidate NAME:VERSION.")],
    data: DataOpt = None,
    as_: Annotated[str, typer.Option("--as", help="shadow, canary:PCT or champion.")] = "champion",
    require: Annotated[
        str | None,
        typer.Option(
            help="Gate over replay metrics, e.g. 'auc >= served_auc + 0.005 and psi < 0.25'."
        ),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    json: JsonOpt = False,
) -> None:
    """Replay a candidate; if the gate holds, append the route (shadow, canary or champion)."""
    from eventml.learning.promote import promote as run_promote

    with _open(data) as log, _progress("replaying", json) as progress:
        p = run_promote(
            log, endpoint, ref, as_=as_, require=require, since=_time(since, "--since"),
            until=_time(until, "--until"), progress=progress,
        )  # fmt: skip
    if json:
        _print_json({"route": ev.to_builtins(p.route), "gate": p.gate, "checks": p.checks,
                     "metrics": p.replay.metrics})  # fmt: skip
        return
    for line in p.checks:
        out.print(f"  {line}", highlight=False)
    out.print(f"{endpoint}: route {p.route.version} → {as_} {p.replay.candidate}", highlight=False)
