#!/usr/bin/env python3
"""Two gateway binaries side by side: alternating rounds on one config.

    bench/ab.py --old OLD --new NEW [--config F] [--rounds 8] [--seconds 6]
                [--old-config F] [--new-config F] [--out FILE.md] -- LOADGEN-ARGS...

Each round starts each binary fresh (`serve --config F` on a loopback port),
waits until it is ready, warms it up for 2 s with the same load, then drives
it with `target/release/switchyard-loadgen LOADGEN-ARGS --duration SECONDS`
and reads the gateway's CPU time from /proc before and after. The order of
the two alternates from round to round, so that a drift of the machine
(other work, the hour) falls on both. Reported, per measure: the median of
the per-round ratios new / old, in how many rounds new was lower, and each
binary's median. With --old-config and --new-config, each side runs on its
own config, so one binary can be compared with itself under two settings
(give it as both --old and --new). Machines here are shared and noisy: judge a change by the
ratio and the count of rounds, not by the absolute numbers.

Needs the Python standard library only. Run from the repository root after
`make build` (the load generator) and whatever set-up the config needs (the
Docker engine for the container tier, `make lambda-emulator` for Lambda).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

LOADGEN = "target/release/switchyard-loadgen"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_ready(url, process, seconds=180):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"ab: the gateway exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"ab: the gateway was not ready within {seconds} s")


def loadgen(url, args, duration, report):
    subprocess.run(
        [LOADGEN, "--url", url, "--duration", duration, "-q", "--report", report] + args,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(report) as f:
        return json.load(f)


def port_taken(port):
    """Whether something already listens on the loopback port: a leftover
    server there would answer for the gateway this round starts, which
    would then fail to bind and the round would measure the wrong server."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def one_round(binary, config, port, args, seconds, workdir):
    url = f"http://127.0.0.1:{port}"
    if port_taken(port):
        sys.exit(f"ab: something already listens on 127.0.0.1:{port}; stop it or pass --port")
    gateway = subprocess.Popen(
        [binary, "serve", "--config", config, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(url, gateway)
        loadgen(url, args, "2s", os.path.join(workdir, "warm-up.json"))
        before = cpu_seconds(gateway.pid)
        report = loadgen(url, args, f"{seconds}s", os.path.join(workdir, "round.json"))
        after = cpu_seconds(gateway.pid)
        if gateway.poll() is not None:
            sys.exit(f"ab: the gateway exited with {gateway.returncode} during the round")
    finally:
        gateway.terminate()
        gateway.wait(timeout=120)
    answered = max(report["counts"]["success"], 1)
    return {
        "p50 µs": report["latency_us"]["p50"],
        "p99 µs": report["latency_us"]["p99"],
        "requests/s": report["throughput_per_s"],
        "gateway CPU µs/request": (after - before) * 1e6 / answered,
        "server inference p50 µs": report["server_timing"]["inference_us"]["p50"],
        "errors": sum(report["counts"].values()) - report["counts"]["success"],
        # Overload: what the server refused (429) and what the client never
        # sent because max-in-flight requests were outstanding.
        "429 answers": report["counts"]["throttled"],
        "not sent (in-flight cap)": report["counts"]["dropped"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the baseline gateway binary")
    parser.add_argument("--new", required=True, help="the gateway binary to compare")
    parser.add_argument("--config", default="config/local-only.toml")
    parser.add_argument("--old-config", help="the old side's config (default: --config)")
    parser.add_argument("--new-config", help="the new side's config (default: --config)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("loadgen_args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    args = [a for a in options.loadgen_args if a != "--"]
    if not args:
        parser.error("give the load after `--`, e.g. -- --model digits --rate 200 --binary")
    if options.rounds < 1 or not 1 <= options.seconds <= 600:
        parser.error("--rounds must be at least 1 and --seconds within 1..600")

    results = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as workdir:
        for i in range(options.rounds):
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for which in order:
                binary = getattr(options, which)
                config = getattr(options, f"{which}_config") or options.config
                measured = one_round(binary, config, options.port, args, options.seconds, workdir)
                results[which].append(measured)
                print(f"round {i + 1} {which}: {measured}", file=sys.stderr, flush=True)

    lines = [
        f"- old: `{options.old}`; new: `{options.new}`",
        f"- config: old `{options.old_config or options.config}`, "
        f"new `{options.new_config or options.config}`; load `{' '.join(args)}`; "
        f"{options.rounds} rounds of {options.seconds} s each, alternating order",
        "",
        "| measure | median of new ÷ old per round | new lower in | old median | new median |",
        "|---|---:|---:|---:|---:|",
    ]
    measures = [
        "p50 µs",
        "p99 µs",
        "requests/s",
        "gateway CPU µs/request",
        "server inference p50 µs",
        "429 answers",
        "not sent (in-flight cap)",
    ]
    for measure in measures:
        pairs = [(o[measure], n[measure]) for o, n in zip(results["old"], results["new"]) if o[measure]]
        ratios = [n / o for o, n in pairs]
        if not ratios:
            continue
        lower = sum(1 for r in ratios if r < 1)
        old_median = statistics.median(o[measure] for o in results["old"])
        new_median = statistics.median(n[measure] for n in results["new"])
        lines.append(
            f"| {measure} | {statistics.median(ratios):.3f} | {lower} of {len(ratios)} "
            f"| {old_median:.1f} | {new_median:.1f} |"
        )
    errors = sum(r["errors"] for rs in results.values() for r in rs)
    lines.append("")
    lines.append(f"Requests without a 2xx over all rounds: {errors}.")
    table = "\n".join(lines) + "\n"
    print(table)
    if options.out:
        with open(options.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
