#!/usr/bin/python3
"""plain_job.py -- the recommendations job as a data team would write it in Python.

    /usr/bin/python3 bench/plain_job.py BROKERS INPUT GROUP N OUTPUT [--store-url U] [--app-id A]

The same job as sluice's extract -> window -> debug sink (bench/job.lua),
written plainly: Debian's python3-confluent-kafka, json.loads, a dict of
deques. The rules are lua/recommendations/extract.lua's (the payload checks,
page views of the app, duid and eid as text, the product slug of
<store>/products/<slug>, dtm as an integer ms timestamp, an eid repeated in one
record counted once), the window is the window step's (per visitor, the last
5 minutes of event time, oldest first, 50 entries at most, an event id already
in the window dropped, an event more than 2 minutes ahead of its Kafka
timestamp dropped, idle visitors freed), and every view produces the same
record to OUTPUT, keyed by visitor:

    {"userId", "product": {"slug", "viewTimestamp"},
     "aggregatedProducts": {"slugs": [...], "viewTimestamps": [...]}}

It reads INPUT from the start under a fresh GROUP until N records have been
consumed and every output record is acknowledged, then prints one JSON line:
records (after the first), cpu_s and wall_s from the first record to the end
(getrusage of the whole process, librdkafka's threads included), out (records
produced), filtered (per reason).
"""
import argparse
import bisect
import collections
import json
import re
import resource
import sys
import time
import urllib.parse

from confluent_kafka import Consumer, KafkaException, Producer

PAYLOAD_SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
WINDOW_MS = 5 * 60 * 1000
MAX_ENTRIES = 50
MAX_SKEW_MS = 2 * 60 * 1000
MAX_SAFE_INTEGER = 2 ** 53
CONTROL = re.compile("[\x00-\x1f\x7f]")
DIGITS = re.compile("[0-9]+")


def text(v, limit=256):
    """v when it is a non-empty string without control characters, at most
    limit bytes of UTF-8; else None."""
    if not isinstance(v, str) or not v or CONTROL.search(v):
        return None
    try:
        n = len(v.encode("utf-8"))
    except UnicodeEncodeError:           # a lone surrogate from a \\ud800 escape
        return None
    return v if n <= limit else None


def timestamp(v):
    """A tracker timestamp as integer ms, or None."""
    if isinstance(v, str):
        if len(v) > 16 or not DIGITS.fullmatch(v):
            return None
        n = int(v)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        if v != int(v):
            return None
        n = int(v)
    else:
        return None
    return n if 0 <= n <= MAX_SAFE_INTEGER else None


def product_slug(url, base):
    """The product handle of a storefront URL, or None and why not."""
    if not isinstance(url, str) or not url:
        return None, "missing_url"
    prefix = base + "/products/"
    if url[:len(base)].lower() != base or url[len(base):len(prefix)] != "/products/":
        return None, "not_a_product_url"
    rest = url[len(prefix):]
    for sep in ("?", "#"):
        rest = rest.split(sep, 1)[0]
    if rest.endswith("/"):
        rest = rest[:-1]
    if not rest or "/" in rest:
        return None, "not_a_product_url"
    slug = rest
    if "%" in rest:
        if re.search("%(?![0-9A-Fa-f]{2})", rest):
            return None, "bad_url"
        try:
            slug = urllib.parse.unquote(rest, errors="strict")
        except UnicodeDecodeError:
            return None, "bad_url"
        if "/" in slug:
            return None, "bad_url"
    if text(slug, 1024) is None:
        return None, "bad_url"
    return slug, None


def page_views(record, app_id, base):
    """The product page views of one collector record, or [] and why not."""
    if not isinstance(record, dict):
        return [], "not_json_object"
    message = record.get("message")
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except ValueError:
            message = None
    if not isinstance(message, dict):
        return [], "message_not_an_object"
    if message.get("schema") != PAYLOAD_SCHEMA:
        return [], "wrong_schema"
    data = message.get("data")
    if not isinstance(data, list):
        return [], "data_not_a_list"
    views, seen, first_reason = [], set(), None
    for ev in data:
        reason = None
        if not isinstance(ev, dict):
            reason = "event_not_an_object"
        elif ev.get("e") != "pv":
            reason = "no_page_view"
        elif ev.get("aid") != app_id:
            reason = "wrong_app_id"
        else:
            duid, eid = ev.get("duid"), ev.get("eid")
            if not isinstance(duid, str) or not duid:
                reason = "missing_duid"
            elif text(duid) is None:
                reason = "bad_duid"
            elif not isinstance(eid, str) or not eid:
                reason = "missing_eid"
            elif text(eid) is None:
                reason = "bad_eid"
            else:
                slug, reason = product_slug(ev.get("url"), base)
                if slug is not None:
                    dtm = ev.get("dtm")
                    if dtm is None or dtm == "":
                        reason = "missing_dtm"
                    else:
                        ts = timestamp(dtm)
                        if ts is None:
                            reason = "bad_dtm"
                        elif eid in seen:
                            reason = "duplicate_eid"
                        else:
                            seen.add(eid)
                            views.append((duid, eid, slug, ts))
        if reason and not first_reason:
            first_reason = reason
    return views, (None if views else first_reason or "no_page_view")


class Windows:
    """Each visitor's views of the last WINDOW_MS of event time: a dict of
    deques of (time, eid, slug), oldest first."""

    def __init__(self):
        self.keys = {}
        self.last_arrival = {}
        self.watermark = 0

    def add(self, key, t, eid, slug, kafka_ts, now):
        """The window after adding the view (now: the clock in ms), or None
        and why it was dropped."""
        arrival = now if kafka_ts < 0 or kafka_ts - MAX_SKEW_MS > now else kafka_ts
        if t - arrival > MAX_SKEW_MS:
            return None, "future_time"
        self.watermark = max(self.watermark, arrival)
        w = self.keys.get(key)
        if w is None:
            w = self.keys[key] = collections.deque()
        elif w:
            newest = w[-1][0]
            if t <= newest - WINDOW_MS:
                return None, "too_old"
            cutoff = max(t, newest) - WINDOW_MS
            while w and w[0][0] <= cutoff:
                w.popleft()
            if len(w) >= MAX_ENTRIES and t < w[0][0]:
                return None, "too_old"
            if any(e[1] == eid for e in w):
                return None, "duplicate"
            while len(w) >= MAX_ENTRIES:
                w.popleft()
        self.last_arrival[key] = arrival
        if not w or t >= w[-1][0]:
            w.append((t, eid, slug))
        else:
            w.insert(bisect.bisect_right([e[0] for e in w], t), (t, eid, slug))
        return w, None

    def expire(self):
        """Frees the visitors nothing arrived for in one window length."""
        limit = self.watermark - WINDOW_MS
        for key in [k for k, a in self.last_arrival.items() if a <= limit]:
            del self.keys[key]
            del self.last_arrival[key]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("brokers")
    ap.add_argument("input")
    ap.add_argument("group")
    ap.add_argument("n", type=int)
    ap.add_argument("output")
    ap.add_argument("--store-url", default="http://127.0.0.1:8080")
    ap.add_argument("--app-id", default="shopify-nu-recommendations")
    ap.add_argument("--fetch-wait-ms", help="the consumer's fetch.wait.max.ms")
    args = ap.parse_args()

    base = args.store_url.rstrip("/").lower()
    conf = {"bootstrap.servers": args.brokers, "group.id": args.group,
            "auto.offset.reset": "earliest"}
    if args.fetch_wait_ms:
        conf["fetch.wait.max.ms"] = int(args.fetch_wait_ms)
    consumer = Consumer(conf)
    # The sink's delivery settings as sluice's (core/kafka.c, core/worker.c):
    # idempotent, batches lingering 5 ms.
    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5,
                         "enable.idempotence": True})
    consumer.subscribe([args.input])

    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    windows = Windows()
    filtered = collections.Counter()
    got = out = 0
    cpu0 = wall0 = None
    next_expire = time.monotonic() + 1
    idle_since = time.monotonic()
    while got < args.n:
        msgs = consumer.consume(500, 0.2)
        if not msgs:
            if time.monotonic() - idle_since > 60:
                sys.exit("plain_job: %d of %d records, then none for 60 s" % (got, args.n))
            continue
        idle_since = time.monotonic()
        if cpu0 is None:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            cpu0, wall0 = ru.ru_utime + ru.ru_stime, time.monotonic()
        now = int(time.time() * 1000)
        for msg in msgs:
            if msg.error():
                raise KafkaException(msg.error())
            got += 1
            try:
                record = json.loads(msg.value())
            except ValueError:
                filtered["not_json_object"] += 1
                continue
            views, reason = page_views(record, args.app_id, base)
            if reason:
                filtered[reason] += 1
            kafka_ts = msg.timestamp()[1]
            for duid, eid, slug, ts in views:
                w, why = windows.add(duid, ts, eid, slug, kafka_ts, now)
                if w is None:
                    filtered[why] += 1
                    continue
                value = {"userId": duid,
                         "product": {"slug": slug, "viewTimestamp": ts},
                         "aggregatedProducts": {"slugs": [e[2] for e in w],
                                                "viewTimestamps": [e[0] for e in w]}}
                while True:
                    try:
                        producer.produce(args.output, json.dumps(value, separators=(",", ":")),
                                         duid, on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.05)
                out += 1
        producer.poll(0)
        if time.monotonic() >= next_expire:
            windows.expire()
            next_expire = time.monotonic() + 1
    if producer.flush(30) != 0 or failed:
        sys.exit("plain_job: %d records not acknowledged: %s" % (len(producer), failed[:3]))
    consumer.commit(asynchronous=False)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"records": got, "cpu_s": ru.ru_utime + ru.ru_stime - cpu0,
                      "wall_s": time.monotonic() - wall0, "out": out,
                      "filtered": dict(filtered)}))
    consumer.close()


if __name__ == "__main__":
    main()
