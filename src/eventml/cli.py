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
from eventml._cli_options import DataOpt, JsonOpt
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


models_app = typer.Typer(help="Models as data: push, list and show model versions.")
app.add_typer(models_app, name="models")


def _descriptor_json(d: ev.ModelDescriptor) -> dict[str, Any]:
    data: dict[str, Any] = ev.to_builtins(d)
    data.pop("payload", None)
    data.pop("type", None)
    return data


@models_app.command("push")
def models_push(
    path: Annotated[Path, typer.Argument(help="A model file or folder.")],
    name: Annotated[str, typer.Option(help="The model's name; versions count per name.")],
    data: DataOpt = None,
    format: Annotated[
        str | None, typer.Option(help="onnx, pmml, sklearn, river, tensorflow (default: detected).")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="The endpoint it is meant for.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    location: Annotated[
        bool, typer.Option("--location", help="Store a file:// URI instead of the bytes.")
    ] = False,
    features: Annotated[
        str | None, typer.Option(help="Feature names a,b,... for a model whose file lacks them.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Load, smoke-test and append a model descriptor; prints NAME:VERSION DIGEST."""
    from eventml.models.registry import push_model

    with _open(data) as log:
        pushed = push_model(
            log, path, name, format=format, endpoint=endpoint, description=description,
            location=location, features=_csv_list(features),
        )  # fmt: skip
    d = pushed.descriptor
    if json:
        out.print_json(
            msgspec.json.encode({"created": pushed.created, **_descriptor_json(d)}).decode()
        )
        return
    sys.stdout.write(f"{d.name}:{d.version} {d.digest}\n")
    if not pushed.created:
        err.print(f"(same bytes as {d.name}:{d.version}; nothing appended)")


@models_app.command("list")
def models_list(data: DataOpt = None, json: JsonOpt = False) -> None:
    """Every model version on the log."""
    from eventml.models.registry import Registry

    with _open(data) as log:
        registry = Registry.from_log(log)
    models = list(registry.all())
    if json:
        out.print_json(msgspec.json.encode([_descriptor_json(d) for d in models]).decode())
        return
    table = Table(title="models")
    for col in ("model", "format", "endpoint", "size", "digest", "created"):
        table.add_column(col)
    for d in models:
        table.add_row(
            f"{d.name}:{d.version}", d.format, d.endpoint or "", f"{d.size:,}", d.digest[:12],
            d.created_at.isoformat(timespec="seconds"),
        )  # fmt: skip
    out.print(table if models else "no models yet: eventml models push PATH --name NAME")


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (latest when no version).")],
    data: DataOpt = None,
    json: JsonOpt = False,
) -> None:
    """One model version: format, input and output schema, digest, size, metrics, lineage."""
    from eventml.models.registry import Registry

    with _open(data) as log:
        d = Registry.from_log(log).resolve(ref)
    info = _descriptor_json(d)
    if json:
        out.print_json(msgspec.json.encode(info).decode())
        return
    out.print(f"[bold]{d.name}:{d.version}[/]  {d.format}  {d.digest}")
    for key in ("endpoint", "description", "size", "location", "created_at"):
        if info.get(key) not in (None, ""):
            out.print(f"  {key}: {info[key]}", highlight=False)
    for title, specs in (("inputs", d.inputs), ("outputs", d.outputs)):
        out.print(f"  {title}:")
        for spec in specs:
            out.print(f"    {spec.name}  {spec.dtype}  {spec.shape}", markup=False, highlight=False)
    out.print(f"  metrics: {dict(d.metrics)}", highlight=False)
    out.print(f"  lineage: {info['lineage']}", highlight=False)


def _split_flag(items: list[str]) -> dict[str, float]:
    """``NAME[:V]=PCT%`` flags into weights."""
    weights: dict[str, float] = {}
    for item in items:
        ref, sep, pct = item.rpartition("=")
        try:
            if not sep or not ref:
                raise ValueError(item)
            weights[ref] = float(pct.rstrip("%"))
        except ValueError:
            raise EventmlError(f'expected --split NAME[:VERSION]=PCT%, got "{item}"') from None
    return weights


@app.command()
def deploy(
    endpoint: Annotated[str, typer.Argument(help="The endpoint to route.")],
    data: DataOpt = None,
    route: Annotated[
        Path | None, typer.Option(help="A route spec (JSON): champion, challengers, shadow, ...")
    ] = None,
    champion: Annotated[
        str | None, typer.Option(help="NAME[:VERSION] answering (latest if no version).")
    ] = None,
    challenger: Annotated[list[str] | None, typer.Option(help="A challenger (repeatable).")] = None,
    shadow: Annotated[
        list[str] | None, typer.Option(help="Scored, never returned (repeatable).")
    ] = None,
    canary: Annotated[str | None, typer.Option(help="A reference model always scored.")] = None,
    split: Annotated[
        list[str] | None, typer.Option(help="NAME[:V]=PCT% arm of a sticky split (repeatable).")
    ] = None,
    decider: Annotated[
        str | None, typer.Option(help="champion, first, consensus, quality, split or bandit.")
    ] = None,
    at_token: Annotated[
        bool, typer.Option("--at-token", help="Switch exactly at a swap token in every partition.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    json: JsonOpt = False,
) -> None:
    """Append a route event: which model versions serve ENDPOINT and how the answer is chosen."""
    from eventml.serving.routes import deploy as deploy_route
    from eventml.serving.spec import parse_spec

    if route is not None:
        if not route.is_file():
            raise EventmlError(f'expected a route spec file, got "{route}"')
        fields = msgspec.json.decode(route.read_bytes()) if route.suffix != ".yaml" else None
        if fields is None:
            raise EventmlError(f"expected a JSON route spec, got {route.name} (YAML is not read)")
    else:
        fields = {}
    flags: dict[str, Any] = {
        "champion": champion, "challengers": challenger, "shadow": shadow,
        "canary": {"model": canary} if canary else None,
        "split": _split_flag(split) if split else None, "decider": decider,
    }  # fmt: skip
    fields.update({k: v for k, v in flags.items() if v})
    if split and not decider:
        fields["decider"] = "split"
    spec = parse_spec(fields, where=str(route) if route else "deploy flags")
    with _open(data) as log:
        event = deploy_route(log, endpoint, spec=spec, at_token=at_token, reason=reason)
    if json:
        out.print_json(ev.to_json(event).decode())
        return
    tokens = f", swap tokens at {event.token_offsets}" if event.at_token else ""
    what = (
        f"champion {event.champion}" if not event.spec else msgspec.json.encode(event.spec).decode()
    )
    out.print(f"{endpoint}: route {event.version} → {what}{tokens}", markup=False, highlight=False)


route_app = typer.Typer(help="Routes: which models serve an endpoint.")
app.add_typer(route_app, name="route")


@route_app.command("show")
def route_show(
    endpoint: Annotated[str, typer.Argument(help="The endpoint.")],
    data: DataOpt = None,
    json: JsonOpt = False,
) -> None:
    """The endpoint's current route and its history."""
    from eventml.models.registry import Registry
    from eventml.serving.spec import spec_of, to_dict

    with _open(data) as log:
        history = Registry.from_log(log).routes.get(endpoint, [])
    if not history:
        raise EventmlError(f"expected a deployed endpoint, got {endpoint!r} with no route")
    rows = [
        {"version": r.version, "spec": to_dict(spec_of(r)), "at_token": r.at_token,
         "reason": r.reason, "ts": r.ts.isoformat()}
        for r in history
    ]  # fmt: skip
    if json:
        out.print_json(
            msgspec.json.encode(
                {"endpoint": endpoint, "current": rows[-1], "history": rows}
            ).decode()
        )
        return
    for r in rows:
        mark = "→" if r is rows[-1] else " "
        note = f"  ({r['reason']})" if r["reason"] else ""
        out.print(
            f"{mark} route {r['version']}: {msgspec.json.encode(r['spec']).decode()}{note}",
            markup=False,
            highlight=False,
        )


@app.command()
def rollback(
    endpoint: Annotated[str, typer.Argument(help="The endpoint.")],
    data: DataOpt = None,
    at_token: Annotated[bool, typer.Option("--at-token", help="Switch at a swap token.")] = False,
) -> None:
    """Return to the route before the current one (a new route event)."""
    from eventml.serving.routes import rollback as rollback_route

    with _open(data) as log:
        event = rollback_route(log, endpoint, at_token=at_token)
    out.print(f"{endpoint}: route {event.version} ({event.reason})", markup=False, highlight=False)


@app.command()
def run(
    data: DataOpt = None,
    group: Annotated[str, typer.Option(help="Consumer group of this engine.")] = "engine",
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit when every record is scored.")
    ] = False,
    batch_max: Annotated[int | None, typer.Option(help="Most records per micro-batch.")] = None,
    batch_ms: Annotated[float | None, typer.Option(help="Longest wait for a batch, ms.")] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads per model.")] = None,
) -> None:
    """Run the stream engine: score records into prediction events, exactly once."""
    import logging
    import signal

    from eventml.serving.engine import Engine

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    settings = Settings.from_env(log=data, batch_max=batch_max, batch_ms=batch_ms, threads=threads)
    with open_log(data, settings) as log:
        engine = Engine(log, settings, group=group)
        signal.signal(signal.SIGTERM, lambda *_: engine.stop())
        try:
            total = engine.run(until_idle=until_idle)
        except KeyboardInterrupt:
            total = -1
        finally:
            engine.close()
    if total >= 0:
        err.print(f"scored {total} records (group {group})")


@app.command()
def stats(data: DataOpt = None, json: JsonOpt = False) -> None:
    """Usage, latency (p50/p99, µs per record) and errors per model version."""
    from eventml.serving.stats import StatsView

    with _open(data) as log:
        view = StatsView.from_log(log)
    rows = [view.versions[k].summary() for k in sorted(view.versions)]
    if json:
        out.print_json(
            msgspec.json.encode({"versions": rows, "endpoints": view.endpoints}).decode()
        )
        return
    table = Table(title="model versions")
    cols = ("model", "usage", "errors", "mean_us", "p50_us", "p99_us", "min_us", "max_us", "since")
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "since") else "right")
    for r in rows:
        table.add_row(f"{r['model']}:{r['version']}", *(str(r[c]) for c in cols[1:]))
    out.print(table if rows else "no predictions yet")
    for endpoint, counts in sorted(view.endpoints.items()):
        out.print(f"{endpoint}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@app.command()
def predictions(
    endpoint: Annotated[str, typer.Argument(help="The endpoint whose predictions to export.")],
    data: DataOpt = None,
    since: Annotated[
        str | None, typer.Option(help="Only those scored at or after (RFC 3339).")
    ] = None,
    format: Annotated[str, typer.Option(help="jsonl, csv or parquet.")] = "jsonl",
    out_file: Annotated[Path | None, typer.Option("--out", help="File (default: stdout).")] = None,
) -> None:
    """Export prediction events with the contract's field names."""
    from eventml.serving.export import export_predictions

    with _open(data) as log:
        count = export_predictions(
            log, endpoint, since=ev.parse_time(since, where="--since") if since else None,
            fmt=format, out=out_file,
        )  # fmt: skip
    if out_file is not None:
        err.print(f"{count} predictions → {out_file}")


@app.command()
def demo(data: DataOpt = None) -> None:
    """Run the main job on the embedded log and say what it did."""
    from eventml.demo import run_demo

    run_demo(data or "./eventml-demo", out)


def _register_commands() -> None:
    """Commands that live beside the code they drive (learning loop)."""
    from eventml.api.cli import register as register_api
    from eventml.learning.cli import register as register_learning

    register_learning(app)
    register_api(app)


_register_commands()


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit status 2."""
    try:
        app()
    except EventmlError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
