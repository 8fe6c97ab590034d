"""bench/l7.sh's report: for each row, every proxy's median over the interleaved rounds (each
round's value beside it), and vane's ratios of medians to the others.

    python3 bench/l7_summary.py RESULTS SECS CLIENTS

RESULTS has one line per measure: round, row, proxy, then the values (the keep-alive row:
requests/s, requests per CPU-second of the proxy, p99 in ms, then per request the proxy's user
and system CPU and the whole machine's busy CPU in µs; every other row: one value).
"""
import statistics
import sys
from collections import defaultdict

ROWS = [
    ("own", "keep-alive HTTP/1.1 requests per second ({secs}s, {clients} connections, own client)"),
    ("ka", "wrk -t2 -c50: requests per second, requests per CPU-second of the proxy, p99 latency"),
    ("h2c", "h2load -c10 -m10 (h2c prior knowledge), requests per second"),
    ("close", "new connection per request (wrk -t2 -c50, Connection: close), requests per second"),
    ("big", "1 MiB responses (wrk -t2 -c10), MB/s"),
    ("tls_ka", "TLS-terminated HTTP/1.1 keep-alive (wrk -t2 -c50), requests per second"),
    ("tls_new", "TLS: a new connection per request, the session resumed (wrk -t2 -c50, "
                "Connection: close), handshakes per second"),
    ("h2_tls", "HTTP/2 over TLS (h2load -c10 -m10), requests per second"),
    ("s13_new", "TLS 1.3 full handshakes one at a time (openssl s_time -new), connections per second"),
    ("s13_reuse", "TLS 1.3 resumed one at a time (openssl s_time -reuse), connections per second"),
    ("s12_new", "TLS 1.2 full handshakes one at a time (s_time -new -tls1_2), connections per second"),
    ("s12_reuse", "TLS 1.2 resumed one at a time (s_time -reuse -tls1_2), connections per second"),
]
# The keep-alive row's marks: the best of HAProxy with two threads and one, nginx with one
# worker and two, in each column (most requests, most per CPU-second, lowest p99).
KA_MARKS = ("haproxy", "haproxy-1t", "nginx", "nginx-2w")


def load(path):
    rows = defaultdict(lambda: defaultdict(list))
    for line in open(path):
        parts = line.split()
        if len(parts) < 4:
            continue
        _round, row, who, *values = parts
        rows[row][who].append([float(v) for v in values])
    return rows


def medians(runs):
    return [statistics.median(col) for col in zip(*runs)]


def rounds(runs, i=0):
    return ", ".join(f"{r[i]:g}" for r in runs)


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def keep_alive(by):
    med = {who: medians(runs) for who, runs in by.items()}
    for who, (r, e, l, *_cpu) in med.items():
        print(f"{who} {r:.0f} ({e:.0f}/cpu-s, p99 {l:.2f} ms)  rounds: {rounds(by[who])}; "
              f"p99 {rounds(by[who], 2)}")
    cpu_split(med)
    marks = {k: med[k] for k in KA_MARKS if k in med}
    pick = lambda i, f: f(marks.items(), key=lambda kv: kv[1][i])
    (rn, r), (en, e), (ln, l) = pick(0, max), pick(1, max), pick(2, min)
    for name in ("vane", "vane-pin"):
        if name not in med:
            continue
        v = med[name]
        for k in ("haproxy", "nginx"):
            o = med[k]
            print(f"ratios: {name}/{k} {v[0] / o[0]:.2f} (per cpu {v[1] / o[1]:.2f}, "
                  f"p99 {v[2] / o[2]:.2f})")
        print(f"ratios: {name}/best {v[0] / r[0]:.2f} ({rn}), per cpu {v[1] / e[1]:.2f} ({en}), "
              f"p99 {v[2] / l[2]:.2f} ({ln})")
    per_round = [f"{a[2] / b[2]:.2f}" for a, b in zip(by["vane"], by["haproxy"])]
    print(f"vane/haproxy p99 by round: {', '.join(per_round)}")


def cpu_split(med):
    """Where a keep-alive request's CPU goes, per proxy; and for vane the most its own code
    could still give: the machine is saturated (client, upstream and proxy share its CPUs), so
    its busy time per request sets the rate, and a proxy whose own (user) code cost nothing
    would raise the rate by machine / (machine - user) at most."""
    if not all(len(v) >= 6 for v in med.values()):
        return
    for who, (_r, _e, _l, user, system, machine) in med.items():
        print(f"cpu per request: {who} user {user:.2f} us, system {system:.2f} us; "
              f"machine {machine:.2f} us")
    if "vane" in med:
        user, machine = med["vane"][3], med["vane"][5]
        if machine > user:
            print(f"vane with no user time at all: at most {machine / (machine - user):.2f}x "
                  f"its requests/s (its user time is {user / machine:.0%} of the machine's)")


def simple(by):
    med = {who: medians(runs)[0] for who, runs in by.items()}
    for who, m in med.items():
        print(f"{who} {m:g}  rounds: {rounds(by[who])}")
    v = med.get("vane")
    others = [k for k in ("haproxy", "nginx", "direct") if k in med]
    line = "ratios: " + "  ".join(f"vane/{k} {ratio(v, med[k])}" for k in others)
    # Rows that measure more than one setting of a proxy (new connections) are also set
    # against the best of them.
    marks = {k: med[k] for k in KA_MARKS if k in med}
    if len(marks) > 2:
        best = max(marks, key=marks.get)
        line += f"  vane/best {ratio(v, marks[best])} ({best})"
    print(line)
    if "haproxy" in by:
        per_round = [ratio(a[0], b[0]) for a, b in zip(by["vane"], by["haproxy"])]
        print(f"vane/haproxy by round: {', '.join(per_round)}")


def main():
    path, secs, clients = sys.argv[1:4]
    rows = load(path)
    n = max((len(r) for by in rows.values() for r in by.values()), default=0)
    print(f"medians of {n} interleaved rounds; each round another proxy goes first")
    for row, title in ROWS:
        if row not in rows:
            continue
        print(f"== {title.format(secs=secs, clients=clients)}")
        if row == "ka":
            keep_alive(rows[row])
        else:
            simple(rows[row])


if __name__ == "__main__":
    main()
