"""The ``eventml`` command. Every command takes ``--data`` (or ``EVENTML_LOG``) to pick the log.

User errors print one line, ``error: ...``, and exit with status 2; never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from eventml import events as ev
from eventml.config import TOPICS, Settings, topic_partitions
from eventml.errors import EventmlError
from eventml.ingest import FileFormat, SendOptions, check_source, send_file
from eventml.log import Log, open_log

app = typer.Typer(
    name="eventml",
    help="Log-driven machine-learning serving: data and models are streams on one log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log_app = typer.Typer(help="Inspect the log: topics, partitions, consumer groups, events.")
app.add_typer(log_app, name="log")

out = Console()
err = Console(stderr=True)

DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "--log",
        envvar="EVENTML_LOG",
        show_envvar=True,
        help="The log: a folder (default ./eventml-data), sqlite:///file, memory://, kafka://host:port.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _open(data: str | None) -> Log:
    return open_log(data, Settings.from_env(log=data))


def _csv_list(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",")) if text else ()


@app.command()
def send(
    endpoint: Annotated[str, typer.Argument(help="The endpoint the records are for.")],
    file: Annotated[Path, typer.Argument(help="A CSV, JSONL or Parquet file.")],
    data: DataOpt = None,
    sep: Annotated[str | None, typer.Option(help="CSV field separator (default , or tab)")] = None,
    columns: Annotated[
        str | None, typer.Option(help="Column names a,b,...; the file then has no header row.")
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="Columns whose values are text, not numbers: a,b.")
    ] = None,
    exclude: Annotated[str | None, typer.Option(help="Columns to leave out: a,b.")] = None,
    missing: Annotated[
        list[str] | None, typer.Option(help="A value meaning missing (repeatable; '' for empty).")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Column holding the record id.")] = None,
    key_column: Annotated[str | None, typer.Option(help="Column holding the entity key.")] = None,
    ts_column: Annotated[str | None, typer.Option(help="Column holding the event time.")] = None,
    format: Annotated[
        str | None, typer.Option(help="csv, jsonl or parquet (default: by file suffix).")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Stream a file into the records topic; malformed lines go to deadletter."""
    if format not in (None, "csv", "jsonl", "parquet"):
        raise EventmlError(f"expected --format csv, jsonl or parquet, got {format!r}")
    opts = SendOptions(
        endpoint=endpoint,
        format=msgspec.convert(format, FileFormat | None),
        sep=sep,
        columns=_csv_list(columns),
        text_columns=frozenset(_csv_list(text)),
        exclude=frozenset(_csv_list(exclude)),
        missing=frozenset(missing or ()),
        id_column=id_column,
        key_column=key_column,
        ts_column=ts_column,
    )
    check_source(file, opts)
    size = file.stat().st_size
    with _open(data) as log:
        if json:
            summary = send_file(log, file, opts)
        else:
            with Progress(
                TextColumn(f"sending {file.name}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            ) as bar:
                task = bar.add_task("send", total=size or None)
                summary = send_file(log, file, opts, lambda done: bar.update(task, completed=done))
    if json:
        out.print_json(msgspec.json.encode(summary).decode())
        return
    out.print(
        f"{file.name} → {endpoint}: accepted {summary.accepted}, rejected {summary.rejected}"
        + (" (in topic deadletter)" if summary.rejected else "")
    )
    for reason in summary.reasons:
        out.print(f"  rejected: {reason}", markup=False, highlight=False)
    if summary.rejected > len(summary.reasons):
        out.print(f"  … and {summary.rejected - len(summary.reasons)} more")


@log_app.command("info")
def log_info(data: DataOpt = None, json: JsonOpt = False) -> None:
    """Topics, partitions, end offsets, consumer groups and their lag."""
    with _open(data) as log:
        topics = {t: log.end_offsets(t) for t in log.topics()}
        groups = log.groups()
    if json:
        out.print_json(
            msgspec.json.encode(
                {
                    "log": data or Settings.from_env().log,
                    "topics": {
                        t: {"partitions": len(ends), "end_offsets": ends, "entries": sum(ends)}
                        for t, ends in topics.items()
                    },
                    "groups": [
                        {
                            "group": g.group,
                            "topic": g.topic,
                            "partition": g.partition,
                            "committed": g.committed,
                            "end": g.end,
                            "lag": g.lag,
                        }
                        for g in groups
                    ],
                }
            ).decode()
        )
        return
    table = Table(title=f"log {data or Settings.from_env().log}")
    for col in ("topic", "partitions", "end offsets", "entries"):
        table.add_column(col, justify="left" if col == "topic" else "right")
    for t, ends in topics.items():
        table.add_row(t, str(len(ends)), " ".join(map(str, ends)), str(sum(ends)))
    out.print(table)
    if groups:
        gt = Table(title="consumer groups")
        for col in ("group", "topic", "partition", "committed", "end", "lag"):
            gt.add_column(col, justify="left" if col in ("group", "topic") else "right")
        for g in groups:
            gt.add_row(g.group, g.topic, str(g.partition), str(g.committed), str(g.end), str(g.lag))
        out.print(gt)
    else:
        out.print("no consumer groups yet")


@log_app.command("init")
def log_init(
    data: DataOpt = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic.")] = None,
    replication: Annotated[int | None, typer.Option(help="Replicas per topic (Kafka).")] = None,
) -> None:
    """Create the standard topics (records, models, predictions, labels, deadletter)."""
    settings = Settings.from_env(log=data, partitions=partitions, replication=replication)
    with open_log(data, settings) as log:
        existing = log.topics()
        for topic in TOPICS:
            log.create_topic(topic, topic_partitions(topic, settings))
        for topic, parts in log.topics().items():
            if topic in TOPICS:
                state = "exists" if topic in existing else "created"
                out.print(f"{topic}: {parts} partition(s), {state}")


@log_app.command("read")
def log_read(
    topic: Annotated[str, typer.Argument(help="records, models, predictions, labels, deadletter…")],
    data: DataOpt = None,
    partition: Annotated[int | None, typer.Option(help="Only this partition.")] = None,
    start: Annotated[int, typer.Option("--from", help="First offset.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many events per partition.")] = 10,
) -> None:
    """Print events of a topic as JSON lines, with their position on the log."""
    with _open(data) as log:
        parts = log.topics().get(topic)
        if parts is None:
            raise EventmlError(f"expected one of the topics {sorted(log.topics())}, got {topic!r}")
        for p in range(parts) if partition is None else [partition]:
            batch = log.read(topic, p, start, limit=limit)
            for entry in batch.entries():
                event = ev.to_builtins(ev.decode(entry.value, where=f"{topic}[{p}]@{entry.offset}"))
                line: dict[str, Any] = {"partition": p, "offset": entry.offset, "event": event}
                sys.stdout.write(msgspec.json.encode(line).decode() + "\n")


@app.command()
def demo(data: DataOpt = None) -> None:
    """Run the main job on the embedded log and say what it did."""
    from eventml.demo import run_demo

    run_demo(data or "./eventml-demo", out)


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit status 2."""
    try:
        app()
    except EventmlError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
