#!/usr/bin/env python3
"""The scale-out cost model of wsbridge (docs/scaling.md), as a runnable simulation.

For each fleet size it prints, per mode (shared, fanout, sharded), the SQS
load on ONE replica (messages received, deleted and made visible again per
second, and the API requests that takes) and the fleet's SQS requests and
monthly bill. Standard library only.

    scripts/scaling-model.py                        # 1 000 Commands/s fleet-wide, 1..200 replicas
    scripts/scaling-model.py --rate 5000 --pollers 16
    scripts/scaling-model.py --rate-per-replica 167 # the fleet is sized by connections:
                                                    # the Command rate grows with it
    scripts/scaling-model.py --replicas 1-200       # every size (default: a selection)
    scripts/scaling-model.py --shard-of client123   # the shard a publisher must set

How each mode is modelled (see docs/scaling.md for the reasoning):

shared   One queue, every replica polls it. A receive lands on the replica
         holding the client with probability 1/R (the receiver is uniform among
         replicas; measured with moto: 2.17 receives per Command at R=2,
         2.92 at R=3, 5.92 at R=6). A miss is released for --retry-delay
         seconds; a Command is received at most
         A = min(ceil(window/delay) + 1, max_receive_count) times, then given
         up (deleted as undeliverable, or moved to the DLQ).
         Monte Carlo over --samples Commands, beside the closed form R(1-q^A).
fanout   One queue per replica, every Command on every queue: each replica
         receives and deletes the whole fleet's Command rate.
sharded  shard = ((crc32(client_id) >> 16) & 0x7fff) % S (what nginx's
         `hash $key;` computes); replica i owns a contiguous range of shards
         and its subscription's filter policy lets only those through. The
         per-replica share is simulated by hashing --clients client ids.

Receive batching: a poller loops receive -> deliver -> settle, i.e. a cycle of
two SQS round trips (--rtt-ms each). A receive returns what arrived during the
cycle (at least 1, at most 10); an idle long poll (20 s) costs one empty
receive. Each receive's batch is settled with at most one DeleteMessageBatch
and one ChangeMessageVisibilityBatch.
"""

import argparse
import math
import random
import sys
import zlib

SECONDS_PER_MONTH = 30 * 24 * 3600
LONG_POLL_SECS = 20
MAX_BATCH = 10
MAX_POLLERS = 64  # the bridge's own limit on `pollers`
FILTER_VALUES_MAX = 150  # SNS: total combination of values in one filter policy
FILTER_POLICIES_PER_TOPIC = 200  # SNS default quota (can be raised)
DEFAULT_SIZES = [1, 2, 3, 4, 5, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200]


def shard_of(client_id: str, shards: int) -> int:
    """The shard of a client id: nginx's `hash` (non-consistent) first pick."""
    return ((zlib.crc32(client_id.encode()) >> 16) & 0x7FFF) % shards


def shard_ranges(shards: int, replicas: int):
    """Contiguous shard ranges, in order: replica i owns [lo, hi). Also the
    nginx upstream weights (hi - lo), listed in this order."""
    base, extra = divmod(shards, replicas)
    ranges, lo = [], 0
    for i in range(replicas):
        hi = lo + base + (1 if i < extra else 0)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def pollers_for(rate: float, args) -> int:
    """Pollers one replica runs for `rate` msg/s: the configured number, or
    as many more as it takes to keep up (the operator raises `pollers`), up
    to the bridge's maximum."""
    needed = math.ceil(rate / (MAX_BATCH / (2 * args.rtt)))
    return min(MAX_POLLERS, max(args.pollers, needed))


class Poll:
    """SQS API requests of `pollers` long-poll loops sharing `rate` msg/s."""

    def __init__(self, rate: float, pollers: int, rtt: float):
        self.pollers = pollers
        self.cycle = 2 * rtt
        self.capacity = pollers * MAX_BATCH / self.cycle
        per_poller = rate / pollers
        self.batch = min(MAX_BATCH, max(1.0, per_poller * self.cycle))
        busy = per_poller / self.batch  # receives that return messages
        idle = math.exp(-per_poller * LONG_POLL_SECS) / LONG_POLL_SECS
        self.receives = pollers * (busy + idle)
        self.busy_receives = pollers * busy
        self.overloaded = rate > self.capacity

    def settle_calls(self, fraction: float) -> float:
        """Batch calls per second for the share `fraction` of the messages."""
        if fraction <= 0:
            return 0.0
        return self.busy_receives * (1 - (1 - fraction) ** self.batch)


def shared(rate, replicas, args, rng):
    window_attempts = math.ceil(args.retry_window / args.retry_delay) + 1
    attempts = min(window_attempts, args.max_receive_count)
    q = 1 - 1 / replicas
    closed = replicas * (1 - q**attempts) if replicas > 1 else 1.0
    lost = q**attempts
    # Monte Carlo: each receive goes to a uniformly chosen replica.
    total, misses_delivered, delivered = 0, 0, 0
    for _ in range(args.samples):
        for k in range(attempts):
            total += 1
            if rng.random() < 1 / replicas:
                delivered += 1
                misses_delivered += k
                break
    simulated = total / args.samples
    receives = rate * simulated  # fleet-wide messages received per second
    releases = receives - rate  # every Command ends in one delete (or the DLQ)
    each = pollers_for(receives / replicas, args)
    poll = Poll(receives, replicas * each, args.rtt)
    delete_share = rate / receives
    requests = poll.receives + poll.settle_calls(delete_share) + poll.settle_calls(1 - delete_share)
    latency = args.retry_delay * (misses_delivered / delivered if delivered else float("inf"))
    return {
        "received": receives / replicas,
        "deleted": rate / replicas,
        "released": releases / replicas,
        "requests": requests / replicas,
        "fleet_requests": requests,
        "receives_per_command": simulated,
        "closed_form": closed,
        "lost": lost,
        "extra_latency": latency,
        "overloaded": poll.overloaded,
        "pollers": each,
    }


def fanout(rate, replicas, args):
    poll = Poll(rate, pollers_for(rate, args), args.rtt)
    requests = poll.receives + poll.settle_calls(1.0)
    return {
        "received": rate,
        "deleted": rate,
        "useful": 1 / replicas,
        "requests": requests,
        "fleet_requests": requests * replicas,
        "overloaded": poll.overloaded,
        "pollers": poll.pollers,
        "pollers_needed": math.ceil(rate / (MAX_BATCH / poll.cycle)),
        "mbytes": rate * args.envelope_bytes / 1e6,
    }


def sharded(rate, replicas, args, client_shards):
    shards = args.shards
    if replicas > shards:
        return None
    ranges = shard_ranges(shards, replicas)
    counts = [0] * shards
    for s in client_shards:
        counts[s] += 1
    shares = [sum(counts[lo:hi]) / len(client_shards) for lo, hi in ranges]
    busiest = max(shares)
    requests = 0.0
    overloaded = False
    for share in shares:
        poll = Poll(rate * share, pollers_for(rate * share, args), args.rtt)
        requests += poll.receives + poll.settle_calls(1.0)
        overloaded |= poll.overloaded
    most_shards = max(hi - lo for lo, hi in ranges)
    return {
        "received": rate * busiest,
        "deleted": rate * busiest,
        "pollers": pollers_for(rate * busiest, args),
        "mbytes": rate * busiest * args.envelope_bytes / 1e6,
        "imbalance": busiest * replicas,
        "requests": requests / replicas,
        "fleet_requests": requests,
        "overloaded": overloaded,
        "shards_per_replica": most_shards,
        "list_fits": most_shards <= FILTER_VALUES_MAX,
        "policies_fit": replicas <= FILTER_POLICIES_PER_TOPIC,
    }


def parse_sizes(text: str):
    if "-" in text and "," not in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def money(requests_per_sec: float, price: float) -> float:
    return requests_per_sec * SECONDS_PER_MONTH * price / 1e6


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rate", type=float, default=1000.0, help="Commands/s, fleet-wide (default 1000)")
    p.add_argument(
        "--rate-per-replica",
        type=float,
        help="Commands/s per replica's clients: the fleet-wide rate is this x replicas",
    )
    p.add_argument("--replicas", default=None, help="sizes: 1-200, or 1,2,5,10 (default: a selection of 1..200)")
    p.add_argument(
        "--pollers",
        type=int,
        default=2,
        help="long-poll loops per replica, at least (default 2); raised up to 64 where the load needs more",
    )
    p.add_argument("--rtt-ms", type=float, default=20.0, help="one SQS call's round trip (default 20 ms)")
    p.add_argument("--retry-delay", type=float, default=5.0, help="shared: retry_delay_secs (default 5)")
    p.add_argument("--retry-window", type=float, default=60.0, help="shared: retry_window_secs (default 60)")
    p.add_argument("--max-receive-count", type=int, default=15, help="redrive maxReceiveCount (default 15)")
    p.add_argument("--shards", type=int, default=4096, help="sharded: S, a power of two <= 32768 (default 4096)")
    p.add_argument("--clients", type=int, default=200_000, help="sharded: client ids hashed (default 200000)")
    p.add_argument("--samples", type=int, default=20_000, help="shared: Commands simulated per size (default 20000)")
    p.add_argument(
        "--envelope-bytes", type=int, default=1200, help="bytes received per Command (SNS envelope; default 1200)"
    )
    p.add_argument("--price", type=float, default=0.40, help="USD per million SQS requests (default 0.40)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--shard-of", metavar="CLIENT_ID", help="print the shard of a client id and exit")
    args = p.parse_args()
    args.rtt = args.rtt_ms / 1000

    if args.shard_of is not None:
        print(shard_of(args.shard_of, args.shards))
        return 0
    if not 1 <= args.pollers <= MAX_POLLERS:
        p.error(f"--pollers must be within 1..={MAX_POLLERS}")
    if not 1 <= args.shards <= 32768:
        p.error("--shards must be within 1..=32768 (the hash has 15 bits)")

    sizes = parse_sizes(args.replicas) if args.replicas else DEFAULT_SIZES
    rng = random.Random(args.seed)
    client_shards = [shard_of(f"client-{i}", args.shards) for i in range(args.clients)]

    def rate_at(r):
        return args.rate_per_replica * r if args.rate_per_replica is not None else args.rate

    poller_capacity = MAX_BATCH / (2 * args.rtt)
    if args.rate_per_replica is not None:
        load = f"{args.rate_per_replica:g} Commands/s per replica's clients (fleet-wide rate grows with the fleet)"
    else:
        load = f"{args.rate:g} Commands/s fleet-wide"
    print(f"# wsbridge scale-out model: {load}")
    print(
        f"# {args.pollers} pollers/replica x {poller_capacity:.0f} msg/s each (SQS round trip {args.rtt_ms:g} ms) "
        f"= {args.pollers * poller_capacity:.0f} msg/s per replica; up to {MAX_POLLERS} pollers "
        f"= {MAX_POLLERS * poller_capacity:.0f} msg/s"
    )
    print(
        f"# shared: retry every {args.retry_delay:g} s for {args.retry_window:g} s, maxReceiveCount "
        f"{args.max_receive_count}; sharded: {args.shards} shards, {args.clients} clients hashed; "
        f"${args.price:g} per million requests"
    )
    print("# per replica: msg/s received / deleted / released (visibility changes); req/s = SQS API requests")
    print(f"# pollers = per replica, raised from {args.pollers} as the load needs; '!' = more than {MAX_POLLERS} pollers can receive")
    print()

    rows = []
    for r in sizes:
        c = rate_at(r)
        rows.append((r, c, shared(c, r, args, rng), fanout(c, r, args), sharded(c, r, args, client_shards)))

    def flag(overloaded):
        return "!" if overloaded else " "

    print("## shared (one queue; a miss is released for another replica)")
    print(
        f"{'replicas':>8} {'Cmd/s':>9} {'recv/s':>9} {'del/s':>9} {'rel/s':>9} {'req/s':>9} {'pollers':>7}"
        f" {'recv/Cmd':>8} {'(closed)':>8} {'lost':>8} {'+latency':>9}"
    )
    for r, c, s, _, _ in rows:
        print(
            f"{r:>8} {c:>9.0f} {s['received']:>9.1f} {s['deleted']:>9.1f} {s['released']:>9.1f}"
            f" {s['requests']:>8.1f}{flag(s['overloaded'])} {s['pollers']:>7} {s['receives_per_command']:>8.2f}"
            f" {s['closed_form']:>8.2f} {s['lost'] * 100:>7.3f}% {s['extra_latency']:>8.1f}s"
        )
    print()
    print("## fanout (a queue per replica; every replica receives every Command)")
    print(
        f"{'replicas':>8} {'Cmd/s':>9} {'recv/s':>9} {'del/s':>9} {'req/s':>9} {'pollers':>7}"
        f" {'MB/s in':>8} {'useful':>7}"
    )
    for r, c, _, f, _ in rows:
        need = f["pollers_needed"]
        pollers = f"{f['pollers']}" if need <= MAX_POLLERS else f"{need}!"
        print(
            f"{r:>8} {c:>9.0f} {f['received']:>9.1f} {f['deleted']:>9.1f} {f['requests']:>8.1f}{flag(f['overloaded'])}"
            f" {pollers:>7} {f['mbytes']:>8.2f} {f['useful'] * 100:>6.1f}%"
        )
    print()
    print("## sharded (a queue per replica, filtered on its shards; the load balancer routes by the same hash)")
    print(
        f"{'replicas':>8} {'Cmd/s':>9} {'recv/s':>9} {'del/s':>9} {'req/s':>9} {'pollers':>7}"
        f" {'MB/s in':>8} {'max/avg':>7} {'shards':>6} {'filter policy':>24}"
    )
    for r, c, _, _, h in rows:
        if h is None:
            print(f"{r:>8} {c:>9.0f}  more replicas than shards")
            continue
        # One numeric range per replica; a list of its shards would have to
        # stay within 150 values.
        policy = "1 range" + ("" if h["list_fits"] else " (list > 150)")
        if not h["policies_fit"]:
            policy += f", > {FILTER_POLICIES_PER_TOPIC} policies"
        print(
            f"{r:>8} {c:>9.0f} {h['received']:>9.1f} {h['deleted']:>9.1f} {h['requests']:>8.1f}{flag(h['overloaded'])}"
            f" {h['pollers']:>7} {h['mbytes']:>8.2f} {h['imbalance']:>7.2f} {h['shards_per_replica']:>6} {policy:>24}"
        )
    print()
    print("## fleet: SQS requests/s and USD/month")
    print(
        f"{'replicas':>8} {'shared req/s':>13} {'fanout req/s':>13} {'sharded req/s':>14}"
        f" {'shared $':>10} {'fanout $':>10} {'sharded $':>10}"
    )
    for r, _, s, f, h in rows:
        hs = h["fleet_requests"] if h else float("nan")
        print(
            f"{r:>8} {s['fleet_requests']:>13.0f} {f['fleet_requests']:>13.0f} {hs:>14.0f}"
            f" {money(s['fleet_requests'], args.price):>10.0f} {money(f['fleet_requests'], args.price):>10.0f}"
            f" {money(hs, args.price):>10.0f}"
        )
    print()

    # Where each mode stops.
    shared_limit = max((r for r, c, s, _, _ in rows if s["lost"] <= 0.001), default=None)
    fanout_limit = max(
        (r for r, c, _, f, _ in rows if f["pollers_needed"] <= MAX_POLLERS), default=None
    )
    print("## where each mode stops (within the sizes above)")
    print(f"shared : largest fleet losing <= 0.1% of Commands to the retry window: {shared_limit}")
    if fanout_limit == sizes[-1]:
        print(f"fanout : every size fits in {MAX_POLLERS} pollers; each replica still receives the whole fleet's rate")
    else:
        print(f"fanout : largest fleet whose per-replica rate fits in {MAX_POLLERS} pollers: {fanout_limit}")
    print(
        f"sharded: one filter policy per replica, {FILTER_POLICIES_PER_TOPIC} per topic by default "
        f"(quota can be raised); shard ranges keep each policy at 1 value"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
