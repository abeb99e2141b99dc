#!/usr/bin/env python3
"""Appends cryptobot-load results (JSON lines) as rows to the tables in docs/benchmarks.md.

usage: bench_table.py RESULTS.jsonl docs/benchmarks.md COMMAND
       bench_table.py RESULTS.jsonl - COMMAND        (print the rows, change no file)
Rows go before each table's marker, so earlier rows stay for comparison:
- `<!-- bench-rows -->`: the fan-out table, one row per cryptobot scenario;
- `<!-- ref-rows -->`: results labelled NAME@cryptobot and NAME@uws (the ref_* scenarios, the same
  load against both servers in one run): a row each and a row of their ratio, cryptobot / uWS;
- `<!-- slow-reader-rows -->`: results with slow readers (the slow_reader scenario).
"""
import datetime
import json
import os
import sys

MARKER = "<!-- bench-rows -->"
REF_MARKER = "<!-- ref-rows -->"
SLOW_MARKER = "<!-- slow-reader-rows -->"


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


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.{digits}f}"


def ref_row(result, date, where, command, scenario, server):
    latency = result["latency_ms"]
    srv = result["server"]
    offered = result.get("offered_per_sec")
    delivered = result["messages_per_sec"]
    share = f"{100 * delivered / offered:.1f} %" if offered else "-"
    return "| " + " | ".join([
        date,
        where,
        scenario,
        f"{offered:,.0f}" if offered else "-",
        server,
        f'{result["connections_ok"]}/{result["connections"]}',
        f"{delivered:,.0f}",
        share,
        fmt(result["ticker_updates_skipped"]),
        fmt(latency["p50"], 3),
        fmt(latency["p99"], 3),
        fmt(latency["max"], 1),
        fmt(srv.get("cpu_us_per_message"), 3),
        fmt(srv.get("cpu_ms")),
        fmt(srv.get("rss_kib_after")),
        fmt(result.get("load_generator_cpu_ms")),
        fmt(result.get("loadavg")),
        f"`{command}`",
    ]) + " |"


def ratio_row(ours, theirs, date, where, scenario):
    def get(result, *path):
        for key in path:
            result = (result or {}).get(key)
        return result

    def r(*path):
        return ratio(get(ours, *path), get(theirs, *path))

    return "| " + " | ".join([
        date,
        where,
        scenario,
        "-",
        "**cryptobot / uWS**",
        "-",
        r("messages_per_sec"),
        "-",
        "-",
        r("latency_ms", "p50"),
        r("latency_ms", "p99"),
        r("latency_ms", "max"),
        r("server", "cpu_us_per_message"),
        r("server", "cpu_ms"),
        r("server", "rss_kib_after"),
        r("load_generator_cpu_ms"),
        "-",
        "ratios of the two rows above",
    ]) + " |"


def ref_rows(results, date, where, command):
    """Rows of the NAME@cryptobot / NAME@uws pairs, in the order the scenarios ran."""
    scenarios = {}
    for result in results:
        scenario, _, server = result["label"].partition("@")
        scenarios.setdefault(scenario, {})[server] = result
    rows = []
    for scenario, servers in scenarios.items():
        for server, name in (("cryptobot", "cryptobot"), ("uws", "uWS reference")):
            if server in servers:
                rows.append(ref_row(servers[server], date, where, command, scenario, name))
        if "cryptobot" in servers and "uws" in servers:
            rows.append(ratio_row(servers["cryptobot"], servers["uws"], date, where, scenario))
    return rows


def age_trend(by_second):
    """The largest age of the window's first and last second: equal if the age has settled."""
    if not by_second:
        return "-"
    return f"{by_second[0]:.0f} / {by_second[-1]:.0f}"


def slow_row(result, date, where, command):
    slow = result["slow_readers"]
    trades = result.get("trades") or {}
    age = slow["ticker_age_ms"]
    queues = slow["kernel_queue_bytes"]
    offered = result.get("offered_per_sec")
    return "| " + " | ".join([
        date,
        where,
        result["label"],
        f'{slow["connected"]}/{slow["count"]}',
        f"{offered:,.0f}" if offered else "-",
        fmt(slow["rate_limit_per_sec"], 0),
        fmt(slow["frames_per_sec_each"], 1),
        fmt(age["p50"], 1),
        fmt(age["p99"], 1),
        fmt(age["max"], 1),
        age_trend(slow.get("ticker_age_max_ms_by_second") or []),
        fmt(slow["tickers_skipped"]),
        f'{trades.get("executed", "-")}/{trades.get("requested", "-")}',
        fmt(slow["trade_notifications_min_per_reader"]),
        fmt(slow["trades_missing"]),
        fmt(slow["trade_seq_gaps"]),
        fmt(slow["drain_secs"], 1),
        f'{queues["client_rx_max"] / 1024:.0f} / {queues["server_tx_max"] / 1024:.0f}',
        fmt(slow["ended"]),
        fmt(result.get("loadavg")),
        f"`{command}`",
    ]) + " |"


def insert(text, marker, rows, doc_path):
    if not rows:
        return text
    if marker not in text:
        sys.exit(f"{doc_path} has no {marker} line")
    return text.replace(marker, "\n".join(rows + [marker]), 1)


def main():
    results_path, doc_path, command = sys.argv[1:4]
    date = datetime.date.today().isoformat()
    where = machine()
    with open(results_path) as results:
        parsed = [json.loads(line) for line in results if line.startswith("{")]
    paired = [r for r in parsed if "@" in r["label"]]
    slow = [r for r in parsed if "@" not in r["label"] and r.get("slow_readers")]
    plain = [r for r in parsed if "@" not in r["label"] and not r.get("slow_readers")]
    tables = [
        (MARKER, [row(r, date, where, command) for r in plain]),
        (REF_MARKER, ref_rows(paired, date, where, command)),
        (SLOW_MARKER, [slow_row(r, date, where, command) for r in slow]),
    ]
    if doc_path == "-":
        for marker, rows in tables:
            if rows:
                print(marker)
                print("\n".join(rows))
        return
    with open(doc_path) as doc:
        text = doc.read()
    for marker, rows in tables:
        text = insert(text, marker, rows, doc_path)
    with open(doc_path, "w") as doc:
        doc.write(text)
    print(f"appended {sum(len(rows) for _, rows in tables)} rows to {doc_path}")


if __name__ == "__main__":
    main()
