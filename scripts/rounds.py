#!/usr/bin/env python3
"""Time several commands in interleaved rounds, for ratios that hold on a
noisy machine.

hyperfine runs all of one command's runs, then all of the next's: when the
machine drifts (page cache, a neighbour on the host, thermal state) between
them, the drift lands in the ratio. Here every round runs each command once,
in the order given, each after its own prepare step, so each round's ratios
compare runs made seconds apart; the medians of those per-round ratios are
what the benchmarks report.

Usage: rounds.py RUNS WARMUP OUT.json < spec.json
  spec.json: [{"name": ..., "prepare": SHELL, "command": SHELL}, ...]
  OUT.json:  {"rounds": RUNS, "shell_overhead": S,
              "results": [{"name": ..., "times": [...], "median": S}, ...]}
Times are wall seconds of `bash -c COMMAND` less the median time of
`bash -c true` (what hyperfine also subtracts). A command that fails stops
the benchmark with its output.
"""
import json
import statistics
import subprocess
import sys
import time


def run(cmd, quiet=True):
    start = time.perf_counter()
    p = subprocess.run(
        ["bash", "-c", cmd],
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE,
    )
    took = time.perf_counter() - start
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace"))
        sys.exit(f"rounds.py: exit {p.returncode} from: {cmd}")
    return took


def main():
    runs, warmup, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    spec = json.load(sys.stdin)
    overhead = statistics.median(run("true") for _ in range(20))
    times = {s["name"]: [] for s in spec}
    for r in range(warmup + runs):
        for s in spec:
            if s.get("prepare"):
                run(s["prepare"])
            t = run(s["command"]) - overhead
            if r >= warmup:
                times[s["name"]].append(t)
        if r >= warmup:
            sys.stderr.write(
                f"round {r - warmup + 1}/{runs}: "
                + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items())
                + "\n"
            )
    json.dump(
        {
            "rounds": runs,
            "shell_overhead": overhead,
            "results": [
                {"name": n, "times": t, "median": statistics.median(t)}
                for n, t in times.items()
            ],
        },
        open(out, "w"),
        indent=1,
    )


if __name__ == "__main__":
    main()
