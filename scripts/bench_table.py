#!/usr/bin/env python3
"""Appends cryptobot-load results (JSON lines) as rows to the fan-out table in docs/benchmarks.md.

usage: bench_table.py RESULTS.jsonl docs/benchmarks.md COMMAND
Rows go before the `<!-- bench-rows -->` marker, so earlier rows stay for comparison.
"""
import datetime
import json
import os
import sys

MARKER = "<!-- bench-rows -->"


def machine():
    cores = os.cpu_count()
    with open("/proc/meminfo") as meminfo:
        kib = int(meminfo.readline().split()[1])
    return f"{cores} cores, {kib / 1024 / 1024:.0f} GiB"


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def row(result, date, where, command):
    latency = result["latency_ms"]
    server = result["server"]
    conns = f'{result["connections_ok"]}/{result["connections"]}'
    if result.get("stalled_connections"):
        conns += f' (+{result["stalled_connections"]} stalled)'
    if result["connections_failed"]:
        conns += f' ({result["connections_failed"]} failed)'
    return "| " + " | ".join([
        date,
        where,
        result["label"],
        conns,
        fmt(result["connect_secs"], 2),
        f'{result["messages_per_sec"]:,.0f}',
        fmt(result["ticker_updates_skipped"]),
        fmt(latency["p50"], 3),
        fmt(latency["p99"], 3),
        fmt(latency["p999"], 3),
        fmt(latency["max"], 1),
        fmt(server.get("cpu_us_per_message"), 3),
        fmt(server.get("rss_kib_per_connection"), 1),
        fmt(server.get("rss_kib_after")),
        fmt(result.get("load_generator_cpu_ms")),
        fmt(result.get("loadavg")),
        f"`{command}`",
    ]) + " |"


def main():
    results_path, doc_path, command = sys.argv[1:4]
    date = datetime.date.today().isoformat()
    where = machine()
    with open(results_path) as results:
        rows = [row(json.loads(line), date, where, command) for line in results if line.startswith("{")]
    with open(doc_path) as doc:
        text = doc.read()
    if MARKER not in text:
        sys.exit(f"{doc_path} has no {MARKER} line")
    text = text.replace(MARKER, "\n".join(rows + [MARKER]), 1)
    with open(doc_path, "w") as doc:
        doc.write(text)
    print(f"appended {len(rows)} rows to {doc_path}")


if __name__ == "__main__":
    main()
