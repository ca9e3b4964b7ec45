#!/usr/bin/python3
"""compare.py -- sluice beside a C consumer and a plain Python job, on one broker.

    bench/compare.py throughput --brokers ADDR|embedded --events F --records N
    bench/compare.py latency --brokers ADDR|embedded --events F --rates 5000,20000 --seconds S
    bench/compare.py ab --brokers ADDR|embedded --events F --a OLD/sluice --b ./sluice [--rounds 8]
                        [--b-extract noread]

Run from the project root after `make sluice build/bench/consume build/bench/produce`
(scripts/bench-compare.sh does all of it, for `make bench`). With --brokers
embedded the script starts `./sluice broker` as its own process (its CPU is
nobody's); else ADDR is a real cluster and topics are made with the admin API.

throughput: loads the first N records of F (scripts/gen-events.lua, KEYED=1)
into one topic, then, in --rounds interleaved rounds, consumes all of it from
the start with each job under a fresh group:

    C librdkafka consumer, count only       build/bench/consume
    C consume -> produce, no processing     build/bench/consume -f (one record of 195 B
                                            produced per record read, with the sinks'
                                            settings: the Kafka client's share of the
                                            whole job's shape)
    sluice extract only                     bench/job.lua, BENCH_STEPS=extract
    sluice extract -> window                BENCH_STEPS=window
    sluice extract -> window -> sink        BENCH_STEPS=sink (the shipped job's shape)
    Python extract -> window -> sink        bench/plain_job.py (same rules, same output)

and prints records per CPU-second of each consuming process (median and
spread over the rounds), the ratio of each to sluice's whole job, and whether
sluice's and Python's sink records agree (count every round, content in the
first). CPU is steady state: the C and Python programs measure themselves from
their first record to the end (getrusage); sluice's is read from
/proc/PID/stat when its /metrics first shows records done and again when all
N are done (every thread of the process in all cases; start-up and group join
are left out of all).

ab: the same job (--steps, the whole job by default) with two sluice binaries
(--a, --b), alternating within each of --rounds rounds on the same records:
the median of the paired ratios B/A, the figure to judge a change of a few
per cent by on a machine whose speed moves between runs. --b-extract noread
gives B a stand-in extract rule that reads nothing of the record (the same
binary twice: what the rule and its reads cost the whole job).

latency: for each rate and fetch wait (the shipped config's, and librdkafka's
default when the shipped config sets one), starts sluice's whole job on a fresh
topic, offers records at the rate for --seconds (build/bench/produce, which
stamps each record's view time with its Kafka timestamp), and prints p50,
p99 and p99.9 of sink record timestamp minus input Kafka timestamp, over the
records after the first second. Against a real cluster the sink topic uses
LogAppendTime, so the sink record's timestamp is the broker's append, i.e. its
acknowledgement; the embedded broker keeps the producer's timestamp (sluice's
produce call, before linger.ms and the round trip), so those figures also show
sluice's own histogram of Kafka timestamp to acknowledgement
(sluice_end_to_end_seconds, by bucket). The offering producer batches with
--offer-linger ms (default: 5 on a real cluster, where its batching is not
in the measured time but its request rate loads the broker; 0 on the
embedded broker, where the measured time starts at its send). --batches adds
runs whose consumer waits for bigger fetches (fetch.min.bytes), which cost
latency and save CPU in a steady stream. Each run also prints sluice's CPU per
record over the offered load, and after the table the C consume -> produce
ceiling's at each rate (build/bench/consume -f): the Kafka client's share.
"""
import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN = "%d-%d" % (os.getpid(), int(time.time()))   # in topic and group names: a rerun starts clean
DONE_TIMEOUT_S = 300
SINK_LINGER_DEFAULT = "5"   # sluice's sinks' linger.ms when the config sets none (worker.c)
DTM = re.compile(r'"dtm":"([0-9]+)"')


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def kilo(x):
    return "%.1fk" % (x / 1000)


# ==================== Brokers ====================

class Broker:
    """The broker the jobs share: an embedded one (`sluice broker`, started
    here with the topics it will need) or a real cluster."""

    def __init__(self, addr, partitions, topics, tmp, append_time=()):
        self.proc = None
        self.embedded = addr == "embedded"
        if self.embedded:
            out = open(os.path.join(tmp, "broker.out"), "w+")
            self.proc = subprocess.Popen(
                ["./sluice", "broker", "--partitions", str(partitions), "--topics", ",".join(topics)],
                stdout=out, stderr=open(os.path.join(tmp, "broker.err"), "w"))
            for _ in range(100):
                out.seek(0)
                line = out.readline().strip()
                if line:
                    break
                time.sleep(0.1)
            else:
                sys.exit("compare: sluice broker printed no address (%s)" % tmp)
            self.addr = line
        else:
            self.addr = addr
            from confluent_kafka.admin import AdminClient, NewTopic
            self.admin = AdminClient({"bootstrap.servers": addr})
            new = [NewTopic(t, num_partitions=partitions, replication_factor=1,
                            config={"message.timestamp.type": "LogAppendTime"} if t in append_time else {})
                   for t in topics]
            from confluent_kafka import KafkaError, KafkaException
            for t, f in self.admin.create_topics(new, operation_timeout=30).items():
                try:
                    f.result()
                except KafkaException as e:  # left by a run stopped before close()
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                    log("compare: topic %s already exists, used as it is" % t)
            self.topics = topics

    def close(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
        elif self.topics:
            for f in self.admin.delete_topics(self.topics, operation_timeout=30).values():
                try:
                    f.result()
                except Exception as e:     # a leftover topic is only disk space
                    log("compare: could not delete a topic: %s" % e)


def kcat_read(addr, topic, fmt):
    """Every record of topic as lines of kcat's format fmt."""
    out = subprocess.run(["kcat", "-b", addr, "-C", "-t", topic, "-e", "-q", "-f", fmt],
                         check=True, capture_output=True).stdout
    return out.decode("utf-8", "replace").splitlines()


# ==================== Processes ====================

def proc_cpu(pid):
    """User + system CPU seconds of pid, every thread."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def metrics(admin, timeout=2):
    """sluice's /metrics as {name{labels}: value}, {} when it does not answer."""
    try:
        with urllib.request.urlopen("http://%s/metrics" % admin, timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


class Sluice:
    """`sluice run -c bench/job.lua` with the given BENCH_* settings."""
    # Below Linux's ephemeral ports (32768-60999): a port the broker's or a
    # client's connection holds cannot be listened on (it happened, 37562).
    port = 20000 + os.getpid() % 12000

    def __init__(self, tmp, name, env, binary="./sluice"):
        Sluice.port += 1
        self.admin = "127.0.0.1:%d" % Sluice.port
        self.errfile = os.path.join(tmp, name + ".err")
        e = dict(os.environ, BENCH_ADMIN=self.admin, **env)
        self.proc = subprocess.Popen([binary, "run", "-c", "bench/job.lua"], env=e,
                                     stdout=subprocess.DEVNULL, stderr=open(self.errfile, "w"))

    def fail(self, why):
        self.stop()
        with open(self.errfile) as f:
            tail = f.read()[-2000:]
        sys.exit("compare: sluice %s\n%s" % (why, tail))

    def done(self):
        return metrics(self.admin).get("sluice_records_done_total", 0)

    def wait_assigned(self, partitions):
        for _ in range(600):
            if self.proc.poll() is not None:
                self.fail("exited")
            if metrics(self.admin).get("sluice_assigned_partitions", 0) >= partitions:
                return
            time.sleep(0.1)
        self.fail("got no partitions in 60 s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ==================== Throughput ====================

JOBS = [
    ("c", "C librdkafka consumer, count only"),
    ("cfwd", "C consume → produce, no processing"),
    ("extract", "sluice extract only"),
    ("window", "sluice extract → window"),
    ("sink", "sluice extract → window → sink"),
    ("python", "Python extract → window → sink"),
]
LINE_NAMES = {"extract": "extract only", "window": "extract → window",
              "sink": "extract → window → sink", "c": "C consume only",
              "cfwd": "C consume → produce",
              "python": "Python extract → window → sink"}


def run_sluice(args, broker, tmp, steps, group, output, binary="./sluice", env=None):
    """One sluice job over the whole topic. Its CPU counts from the last
    /metrics answer that showed no record taken yet (start-up and group join
    left out) to the one that shows all N done. /metrics is served by the
    same loop as the records, which does not answer it while a backlog
    drains, so the answers bracket the work and polling costs it nothing."""
    s = Sluice(tmp, group, {"BENCH_BROKERS": broker.addr,
                            "BENCH_KAFKA_AS": "embedded" if broker.embedded else broker.addr,
                            "BENCH_STEPS": steps, "BENCH_INPUT": args.input,
                            "BENCH_OUTPUT": output, "BENCH_GROUP": group, **(env or {})}, binary)
    base = (0.0, time.monotonic())
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while True:
        if s.proc.poll() is not None:
            s.fail("exited before all records were done")
        m = metrics(s.admin, timeout=DONE_TIMEOUT_S)
        cpu, now = proc_cpu(s.proc.pid), time.monotonic()
        if m and m.get("sluice_records_in_total", 0) == 0:
            base = (cpu, now)
        if m.get("sluice_records_done_total", 0) >= args.records:
            rss = proc_rss_mb(s.proc.pid)
            break
        if now > deadline:
            s.fail("did %d of %d records in %d s"
                   % (m.get("sluice_records_done_total", 0), args.records, DONE_TIMEOUT_S))
        time.sleep(0.02)
    out = sum(v for k, v in m.items()
              if k.startswith("sluice_step_out_total") and 'step="debug"' in k)
    s.stop()
    return {"records": args.records, "cpu_s": cpu - base[0], "wall_s": now - base[1], "out": out,
            "rss_mb": rss}


def run_program(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=DONE_TIMEOUT_S)
    if r.returncode != 0:
        sys.exit("compare: %s failed:\n%s" % (" ".join(cmd), r.stderr[-2000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def canonical(lines):
    """Sink records as sorted key + canonical JSON value lines."""
    out = []
    for line in lines:
        key, _, value = line.partition("\t")
        out.append(key + "\t" + json.dumps(json.loads(value), sort_keys=True))
    out.sort()
    return out


def out_topic(job, r):
    return "bench-out-%s-%d-%s" % (job, r, RUN)


def throughput(args):
    rounds = range(1, args.rounds + 1)
    outputs = [out_topic(j, r) for r in rounds for j in ("sink", "python", "cfwd")]
    tmp = tempfile.mkdtemp(prefix="sluice-bench.")
    broker = Broker(args.brokers, args.partitions, [args.input, "sluice.dead-letter"] + outputs, tmp)
    try:
        return throughput_on(args, broker, tmp)
    finally:
        broker.close()


def load_input(args, broker):
    """Produces the first --records lines of --events into --input; returns
    their bytes."""
    with open(args.events, "rb") as f:
        head = b"".join(line for _, line in zip(range(args.records), f))
    if head.count(b"\n") < args.records:
        sys.exit("compare: %s has fewer than %d records" % (args.events, args.records))
    subprocess.run(["kcat", "-b", broker.addr, "-P", "-t", args.input, "-K", "\t",
                    "-X", "linger.ms=20"], input=head, check=True)
    return len(head)


def throughput_on(args, broker, tmp):
    label = "embedded broker, %d partitions" % args.partitions if broker.embedded \
        else "Kafka at %s, %d partitions" % (broker.addr, args.partitions)
    log("compare: loading %d records into %s (%s)" % (args.records, args.input, label))
    size = load_input(args, broker) / args.records
    store_url = "http://127.0.0.1:8080"
    # The sinks' linger as shipped for this broker (5 ms, sluice's default, when unset).
    linger = shipped_kafka("embedded" if broker.embedded else broker.addr)[1] or SINK_LINGER_DEFAULT
    results = collections.defaultdict(list)
    for r in range(1, args.rounds + 1):
        order = JOBS[r - 1:] + JOBS[:r - 1]        # rotate: no job always goes first
        for job, name in order:
            group = "bench-%s-%d-%s" % (job, r, RUN)
            if job == "c":
                res = run_program(["build/bench/consume", broker.addr, args.input, group,
                                   str(args.records)])
            elif job == "cfwd":
                res = run_program(["build/bench/consume", "-f", out_topic("cfwd", r), "-l", linger,
                                   broker.addr, args.input, group, str(args.records)])
                if res["forwarded"] != args.records:
                    sys.exit("compare: round %d: %s delivered %d of %d records"
                             % (r, name, res["forwarded"], args.records))
            elif job == "python":
                res = run_program(["/usr/bin/python3", "bench/plain_job.py", broker.addr,
                                   args.input, group, str(args.records),
                                   out_topic("python", r), "--store-url", store_url])
            else:
                res = run_sluice(args, broker, tmp, job, group, out_topic("sink", r))
            if res["cpu_s"] < 0.05 or res["records"] < args.records / 2:
                sys.exit("compare: %s did %d records in %.3f CPU s after its first: too few "
                         "records to measure (--records)" % (name, res["records"], res["cpu_s"]))
            res["rate"] = res["records"] / res["cpu_s"]
            results[job].append(res)
            log("compare: round %d %-34s %9.0f records per CPU-second (%d records, %.2f CPU s, %.1f s)"
                % (r, name, res["rate"], res["records"], res["cpu_s"], res["wall_s"]))
        sl, py = results["sink"][-1]["out"], results["python"][-1]["out"]
        if sl != py:
            sys.exit("compare: round %d: sluice's sink produced %d records, Python's %d: "
                     "not the same job" % (r, sl, py))
    # Content: every record of both sinks in the first round, as parsed JSON.
    a = canonical(kcat_read(broker.addr, out_topic("sink", 1), "%k\t%s\n"))
    b = canonical(kcat_read(broker.addr, out_topic("python", 1), "%k\t%s\n"))
    same = sum(1 for x, y in zip(a, b) if x == y)
    if len(a) != len(b) or same != len(a):
        sys.exit("compare: sink records differ: sluice %d, Python %d, %d equal" % (len(a), len(b), same))

    def med(job):
        rates = sorted(x["rate"] for x in results[job])
        return rates[len(rates) // 2], rates[0], rates[-1]

    whole = med("sink")[0]
    print("### %s: %d records of %.0f B, 10%% filtered, %d rounds, %s"
          % (label, args.records, size, args.rounds, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    for job, _ in JOBS[1:] + JOBS[:1]:
        m, lo, hi = med(job)
        print("%s: %d records per CPU-second (median of %d, spread %d-%d)"
              % (LINE_NAMES[job], m, args.rounds, lo, hi))
    print("sink records: sluice %d, Python %d, the same %d records (key and JSON value) in round 1"
          % (results["sink"][0]["out"], results["python"][0]["out"], same))
    print()
    print("| job | records per CPU-second | spread | records/s wall | × sluice's whole job |")
    print("|---|---:|---:|---:|---:|")
    for job, name in JOBS:
        m, lo, hi = med(job)
        walls = sorted(x["records"] / x["wall_s"] for x in results[job])
        print("| %s | %s | %s–%s | %s | %.2f |" % (name, kilo(m), kilo(lo), kilo(hi),
                                                  kilo(walls[len(walls) // 2]), m / whole))
    rss = max(x["rss_mb"] for x in results["sink"])
    print("\nsluice's whole job: peak RSS %.0f MB" % rss)
    return 0


# ==================== Two builds, paired ====================

def ab(args):
    """The same job with two sluice binaries, alternating within each round
    (A then B, then B then A), on one broker and the same records: per
    round the two rates and B's ratio to A. On a shared machine the rate of
    one build moves by a fifth between runs; adjacent runs move together, so
    the median of the paired ratios shows a change of a few per cent where
    the medians of the rates do not."""
    for b in (args.a, args.b):
        if not os.access(b, os.X_OK):
            sys.exit("compare: %s is not an executable sluice" % b)
    rounds = range(1, args.rounds + 1)
    def name(w, r):                  # the run's consumer group and sink topic
        return "bench-ab-%s-%d-%s" % (w, r, RUN)
    outputs = [name(w, r) for r in rounds for w in "ab"]
    tmp = tempfile.mkdtemp(prefix="sluice-bench.")
    broker = Broker(args.brokers, args.partitions, [args.input, "sluice.dead-letter"] + outputs, tmp)
    try:
        load_input(args, broker)
        rates = {"a": [], "b": []}
        ratios = []
        for r in rounds:
            got = {}
            for w in ("ab" if r % 2 else "ba"):
                res = run_sluice(args, broker, tmp, args.steps, name(w, r), name(w, r),
                                 getattr(args, w),
                                 {"BENCH_EXTRACT": args.b_extract} if w == "b" else None)
                got[w] = res["records"] / res["cpu_s"]
                rates[w].append(got[w])
            ratios.append(got["b"] / got["a"])
            log("compare: round %d A %.0f B %.0f records per CPU-second, B/A %.3f"
                % (r, got["a"], got["b"], ratios[-1]))
    finally:
        broker.close()

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    print("### %s, BENCH_STEPS=%s, %d records, %d rounds: A %s, B %s%s"
          % (args.brokers, args.steps, args.records, args.rounds, args.a, args.b,
             "" if args.b_extract == "shipped" else " with BENCH_EXTRACT=" + args.b_extract))
    for w in "ab":
        print("%s: %d records per CPU-second (median, spread %d-%d)"
              % (w.upper(), median(rates[w]), min(rates[w]), max(rates[w])))
    print("B/A: median of the paired ratios %.3f (spread %.3f-%.3f), B ahead in %d of %d rounds"
          % (median(ratios), min(ratios), max(ratios), sum(x > 1 for x in ratios), len(ratios)))
    return 0


# ==================== Latency ====================

def shipped_kafka(kafka_as):
    """fetch.wait.max.ms and the producers' linger.ms as config/recommendations.lua
    sets them for these brokers ("" where it does not)."""
    lua = ('env = function(n, d) if n == "KAFKA_BROKERS" then return os.getenv("AS") end '
           'local v = os.getenv(n); if v == nil then return d end return v end '
           'local k = dofile("config/recommendations.lua").kafka '
           'print(k.consumer and k.consumer["fetch.wait.max.ms"] or "") '
           'print(k.producer and k.producer["linger.ms"] or "")')
    out = subprocess.run(["luajit", "-e", lua], env=dict(os.environ, AS=kafka_as),
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return out[0].strip(), out[1].strip()


def percentile(sorted_xs, p):
    return sorted_xs[min(len(sorted_xs) - 1, int(p / 100 * len(sorted_xs)))]


def histogram_quantile(m, q):
    """The upper bound of the sluice_end_to_end_seconds bucket holding quantile q, ms."""
    buckets = []
    for k, v in m.items():
        if k.startswith("sluice_end_to_end_seconds_bucket"):
            le = k.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le * 1000
    return None


def lat_rates(args):
    return [int(x) for x in args.rates.split(",")]


def lat_topic(what, n):
    return "lat-%s-%d-%s" % (what, n, RUN)


def latency_runs(args, shipped_wait, shipped_linger):
    """(rate, fetch wait, linger, wait label, linger label, fetch.min.bytes) of
    each run: BENCH_FETCH_WAIT, BENCH_LINGER and BENCH_FETCH_MIN_BYTES values for
    bench/job.lua ("" for the last: as shipped) and how the table names them."""
    waits = []
    for w in args.waits.split(","):
        if w == "shipped":
            waits.append(("shipped", "%s (shipped)" % shipped_wait if shipped_wait
                          else "500 (librdkafka's default, as shipped)"))
        elif w == "default":
            if shipped_wait or "shipped" not in args.waits:
                waits.append(("default", "500 (librdkafka's default)"))
        else:
            waits.append((str(int(w)), w))
    runs = []
    for rate in lat_rates(args):
        shipped_ln = shipped_linger or "%s (sluice's default for sinks)" % SINK_LINGER_DEFAULT
        for w, wl in waits:
            runs.append((rate, w, "shipped", wl, shipped_ln, ""))
        for ln in (x for x in args.lingers.split(",") if x):
            runs.append((rate, "shipped", str(int(ln)), waits[0][1], ln, ""))
        for b in (x for x in args.batches.split(",") if x):
            mb, w = (str(int(v)) for v in b.split(":"))
            runs.append((rate, w, "shipped", "%s, fetch.min.bytes %s" % (w, mb), shipped_ln, mb))
    return runs


def latency(args):
    kafka_as = "embedded" if args.brokers == "embedded" else args.brokers
    shipped_wait, shipped_linger = shipped_kafka(kafka_as)
    runs = latency_runs(args, shipped_wait, shipped_linger)
    topics = [lat_topic(w, i) for i in range(len(runs)) for w in ("in", "out")]
    topics += [lat_topic(w, i) for i in range(len(lat_rates(args))) for w in ("cin", "cout")]
    tmp = tempfile.mkdtemp(prefix="sluice-bench.")
    broker = Broker(args.brokers, args.partitions, topics + ["sluice.dead-letter"], tmp,
                    append_time=topics)
    try:
        return latency_on(args, broker, tmp, runs, shipped_linger)
    finally:
        broker.close()


def input_times(broker, topic):
    """Each input record's Kafka timestamp by (key, view time): its
    LogAppendTime on a real cluster, the producer's stamp (which is also
    the view time) on the embedded broker."""
    out = {}
    for line in kcat_read(broker.addr, topic, "%k\t%T\t%s\n"):
        key, ts, value = line.split("\t", 2)
        view = DTM.search(value)
        if view:
            out[(key, int(view.group(1)))] = int(ts)
    return out


def latency_on(args, broker, tmp, runs, shipped_linger):
    label = "embedded broker, %d partitions" % args.partitions if broker.embedded \
        else "Kafka at %s, %d partitions" % (broker.addr, args.partitions)
    if broker.embedded:
        what = ("from the input record's Kafka timestamp (the producer's, at its send) to the "
                "sink record's arrival at a reader fetching every 1 ms (build/bench/consume -t): "
                "the embedded broker keeps producers' timestamps, so its append is not recorded")
    else:
        what = ("from the input record's Kafka timestamp to the sink record's, both "
                "LogAppendTime: the broker's append of the input to its append (its "
                "acknowledgement) of the output. Last column: the offering producer's send to "
                "the input's append, not counted")
    offer_linger = args.offer_linger if args.offer_linger is not None else \
        (0 if broker.embedded else 5)
    print("### latency, %s, the whole job (extract → window → sink), records after the first "
          "second, %s; the offering producer's linger.ms is %d" % (label, what, offer_linger))
    print()
    print("| offered load | consumer fetch.wait.max.ms | sink linger.ms | records | p50 | p99 | p99.9 | max |"
          " sluice_end_to_end_seconds p50 / p99 (bucket bound) | send → Kafka p50 / p99 |"
          " sluice CPU per record |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---|---|---:|")
    for i, (rate, wait, linger, wait_label, linger_label, min_bytes) in enumerate(runs):
        tin, tout = lat_topic("in", i), lat_topic("out", i)
        reader = None
        if broker.embedded:
            seen_file = os.path.join(tmp, tout + ".seen")
            reader = subprocess.Popen(["build/bench/consume", "-t", "3000", "-w", "1", broker.addr,
                                       tout, "reader-" + tout, "0"], stdout=open(seen_file, "w"),
                                      stderr=subprocess.PIPE, text=True)
        s = Sluice(tmp, tin, {"BENCH_BROKERS": broker.addr,
                              "BENCH_KAFKA_AS": "embedded" if broker.embedded else broker.addr,
                              "BENCH_STEPS": "sink", "BENCH_INPUT": tin, "BENCH_OUTPUT": tout,
                              "BENCH_GROUP": tin, "BENCH_FETCH_WAIT": wait, "BENCH_LINGER": linger,
                              "BENCH_FETCH_MIN_BYTES": min_bytes})
        s.wait_assigned(args.partitions)
        time.sleep(1)                       # its first fetches are out
        cpu0, done0 = proc_cpu(s.proc.pid), s.done()
        prod = run_program(["build/bench/produce", broker.addr, tin, args.events, str(rate),
                            str(args.seconds), str(offer_linger)])
        deadline = time.monotonic() + 60
        while s.done() < prod["sent"] and time.monotonic() < deadline:
            time.sleep(0.1)
        # sluice's CPU over the offered load, idle moments included: a steady
        # stream's cost, where the throughput runs read a backlog.
        cpu, done = proc_cpu(s.proc.pid) - cpu0, s.done() - done0
        m = metrics(s.admin)
        s.stop()
        appended = input_times(broker, tin)
        if reader:
            _, err = reader.communicate(timeout=120)
            if reader.returncode != 0:
                sys.exit("compare: the sink reader failed: %s" % err[-1000:])
            with open(seen_file) as f:
                seen = [(k, int(v), int(t)) for t, k, v in
                        (line.rstrip("\n").split("\t") for line in f if line.count("\t") == 2)]
        else:
            seen = []
            for line in kcat_read(broker.addr, tout, "%k\t%T\t%s\n"):
                key, ts, value = line.split("\t", 2)
                seen.append((key, json.loads(value)["product"]["viewTimestamp"], int(ts)))
        t0 = min(v for _, v in appended) if appended else 0
        lat, unmatched = [], 0
        for key, view, ts in seen:
            tin_ms = appended.get((key, view))
            if tin_ms is None:
                unmatched += 1
            elif view >= t0 + 1000:
                lat.append(ts - tin_ms)
        lat.sort()
        if not lat:
            sys.exit("compare: no sink records on %s" % tout)
        if unmatched:
            sys.exit("compare: %d sink records on %s match no input record" % (unmatched, tout))
        ahead = sorted(tin_ms - v for (_, v), tin_ms in appended.items())
        h50, h99 = histogram_quantile(m, 0.5), histogram_quantile(m, 0.99)
        print("| %d/s | %s | %s | %d | %d ms | %d ms | %d ms | %d ms | %s / %s ms | %s | %s |"
              % (rate, wait_label, linger_label, len(lat), percentile(lat, 50), percentile(lat, 99),
                 percentile(lat, 99.9), lat[-1], "≤ %g" % h50 if h50 else "-",
                 "≤ %g" % h99 if h99 else "-",
                 "-" if broker.embedded else "%d / %d ms" % (percentile(ahead, 50), percentile(ahead, 99)),
                 "%.1f µs" % (cpu / done * 1e6) if done > 0 else "-"))
        if prod["late_ms_max"] > 100:
            print("|  | the offering producer fell %.0f ms behind its schedule at worst |"
                  "  |  |  |  |  |  |  |  |  |" % prod["late_ms_max"])
        sys.stdout.flush()
    latency_ceiling(args, broker, offer_linger, shipped_linger or SINK_LINGER_DEFAULT)
    return 0


def latency_ceiling(args, broker, offer_linger, linger):
    """The Kafka client's own cost of a steady stream: build/bench/consume -f
    (consume, produce one record each, the sinks' settings) at each offered
    load, CPU per record from its first record to its last acknowledgement."""
    print()
    for i, rate in enumerate(lat_rates(args)):
        tin, tout = lat_topic("cin", i), lat_topic("cout", i)
        n = int(rate * args.seconds)
        c = subprocess.Popen(["build/bench/consume", "-f", tout, "-l", linger, broker.addr, tin,
                              "ceiling-" + tin, str(n)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(3)                       # joined, its first fetches out
        run_program(["build/bench/produce", broker.addr, tin, args.events, str(rate),
                     str(args.seconds), str(offer_linger)])
        out, err = c.communicate(timeout=DONE_TIMEOUT_S)
        if c.returncode != 0:
            sys.exit("compare: the C consume -> produce ceiling failed: %s" % err[-1000:])
        res = json.loads(out.strip().splitlines()[-1])
        print("C consume → produce (no processing, the sinks' settings, linger.ms %s) at %d/s: "
              "%.1f µs of CPU a record over %d records" % (linger, rate, res["cpu_s"] / res["records"] * 1e6,
                                                           res["records"]))
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("throughput", "latency", "ab"):
        p = sub.add_parser(name)
        p.add_argument("--brokers", required=True, help="embedded, or host:port of a cluster")
        p.add_argument("--events", required=True, help="scripts/gen-events.lua output, KEYED=1")
        p.add_argument("--partitions", type=int, default=4)
    t = sub.choices["throughput"]
    t.add_argument("--records", type=int, default=200000)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--input", default="bench-in-" + RUN)
    a = sub.choices["ab"]
    a.add_argument("--a", required=True, help="the first sluice binary (e.g. a worktree's ./sluice)")
    a.add_argument("--b", required=True, help="the second")
    a.add_argument("--steps", default="sink", choices=("extract", "window", "sink"))
    a.add_argument("--b-extract", default="shipped", choices=("shipped", "noread"),
                   help="B's extract rule: noread, a stand-in that reads nothing of the record "
                        "(bench/job.lua)")
    a.add_argument("--records", type=int, default=200000)
    a.add_argument("--rounds", type=int, default=8)
    a.add_argument("--input", default="bench-ab-in-" + RUN)
    lt = sub.choices["latency"]
    lt.add_argument("--rates", default="5000,20000")
    lt.add_argument("--seconds", type=float, default=10)
    lt.add_argument("--waits", default="shipped,default",
                    help="consumer fetch waits: shipped (the shipped config's), default "
                         "(librdkafka's; left out when the shipped config keeps it), or ms")
    lt.add_argument("--lingers", default="1",
                    help="sink linger.ms values to run too (with the first fetch wait), "
                         "beside the shipped one")
    lt.add_argument("--batches", default="",
                    help="MIN_BYTES:WAIT_MS pairs, comma-separated: runs whose consumer has "
                         "fetch.min.bytes MIN_BYTES and fetch.wait.max.ms WAIT_MS (bigger "
                         "batches for less CPU a record in a steady stream), beside the others")
    lt.add_argument("--offer-linger", type=int, default=None,
                    help="the offering producer's linger.ms (default: 5 on a real cluster, "
                         "0 on the embedded broker)")
    args = ap.parse_args()
    if args.what == "ab":
        return ab(args)
    return throughput(args) if args.what == "throughput" else latency(args)


if __name__ == "__main__":
    sys.exit(main())
