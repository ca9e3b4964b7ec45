#!/usr/bin/env python3
"""soak-load.py -- tracker traffic for scripts/soak.sh and spec/integration/corpus_spec.lua.

  soak-load.py steady --port P --rate R --seconds S --acked FILE [--threads N]
      POSTs one valid product page view per request, each with its own eid,
      R requests/s over N keep-alive connections; appends every eid the
      collector answered 200 to FILE (one a line). Prints the HTTP codes.
  soak-load.py corpus --port P --rate R --seconds S [--visitors V]
      Malformed tracker payloads of every kind (see KINDS), R requests/s in
      turn, and V page views/s of visitor ids never seen before (POSTs of 50
      events). Prints one JSON line: per kind how many were sent and the HTTP
      codes, and the visitor events acknowledged.
  soak-load.py dump DIR
      Writes each kind's body to DIR/<kind>.body and DIR/kinds.json:
      {kind: [collector result, extract filter reason or "ok"]}.

Common options: --store URL (the store_url of the extract rule), --app ID
(its app_id), --origin (default: the store URL).
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
import uuid

SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
TP2 = "/com.snowplowanalytics.snowplow/tp2"


def event(args, eid=None, duid=None, **over):
    now = int(time.time() * 1000)
    ev = {
        "e": "pv", "aid": args.app, "duid": duid or str(uuid.uuid4()), "eid": eid or str(uuid.uuid4()),
        "url": args.store + "/products/soak-product-%d" % (now % 37), "page": "Soak product",
        "dtm": str(now), "stm": str(now), "p": "web", "tv": "js-4.10.1",
    }
    for k, v in over.items():
        ev[k] = v
    return ev


def payload(events, schema=SCHEMA):
    return json.dumps({"schema": schema, "data": events}, separators=(",", ":")).encode()


def nested(depth):
    return "[" * depth + "]" * depth


# kind -> (body builder, collector result, extract filter reason or "ok")
def kinds(args):
    valid = payload([event(args)])
    return {
        "truncated": (lambda: valid[: len(valid) // 2], "bad_json", None),
        "not_json": (lambda: b"hello, collector", "bad_json", None),
        "deep_refused": (lambda: payload([event(args)])[:-3] + b',"x":' + nested(100).encode() + b"}]}",
                         "bad_json", None),
        "invalid_utf8": (lambda: payload([event(args, page="\udcff")]).replace(b"\\udcff", b"\xff"),
                         "bad_json", None),
        "lone_surrogate": (lambda: payload([event(args, page="x")]).replace(b'"page":"x"', b'"page":"\\ud800"'),
                           "bad_json", None),
        "huge_body": (lambda: payload([event(args, page="h" * 100000)]), "too_large", None),
        "top_level_array": (lambda: b"[" + valid + b"]", "bad_payload", None),
        "data_not_list": (lambda: json.dumps({"schema": SCHEMA, "data": event(args)}).encode(),
                          "bad_payload", None),
        "wrong_schema": (lambda: payload([event(args)], "iglu:com.acme/x/jsonschema/1-0-0"), "bad_payload", None),
        "schema_number": (lambda: json.dumps({"schema": 5, "data": [event(args)]}).encode(), "bad_payload", None),
        "event_not_object": (lambda: payload([1]), "bad_payload", None),
        "e_number": (lambda: payload([event(args, e=1)]), "ok", "no_page_view"),
        "aid_number": (lambda: payload([event(args, aid=7)]), "ok", "wrong_app_id"),
        "duid_number": (lambda: payload([event(args, duid=12345)]), "ok", "missing_duid"),
        "duid_control": (lambda: payload([event(args, duid="a\u0001b")]), "ok", "bad_duid"),
        "eid_number": (lambda: payload([event(args, eid=1.5)]), "ok", "missing_eid"),
        "url_number": (lambda: payload([event(args, url=404)]), "ok", "missing_url"),
        "url_huge": (lambda: payload([event(args, url=args.store + "/products/" + "u" * 20000)]), "ok", "bad_url"),
        "dtm_object": (lambda: payload([event(args, dtm={"ms": 1}) ]), "ok", "bad_dtm"),
        "dtm_null": (lambda: payload([event(args, dtm=None)]), "ok", "missing_dtm"),
        "deep_accepted": (lambda: payload([event(args, x=json.loads(nested(50)))]), "ok", "ok"),
    }


class Sender:
    """One keep-alive connection to the collector."""

    def __init__(self, args):
        self.args = args
        self.conn = None

    def post(self, body):
        headers = {"Content-Type": "application/json; charset=UTF-8", "Origin": self.args.origin}
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.args.port, timeout=30)
                self.conn.request("POST", TP2, body=body, headers=headers)
                r = self.conn.getresponse()
                r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
        return 0


def paced(rate, seconds, threads, fn):
    """Calls fn(sender, i) about rate times a second for seconds, over threads."""
    stop = time.monotonic() + seconds
    per = rate / threads

    def run(t):
        s = Sender(ARGS)
        i, start = 0, time.monotonic()
        while time.monotonic() < stop:
            fn(s, i * threads + t)
            i += 1
            ahead = start + i / per - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def steady(args):
    lock = threading.Lock()
    codes = {}
    out = open(args.acked, "a")

    def one(s, i):
        eid = str(uuid.uuid4())
        code = s.post(payload([event(args, eid=eid, duid="soak-visitor-%d" % (i % 500))]))
        with lock:
            codes[code] = codes.get(code, 0) + 1
            if code == 200:
                out.write(eid + "\n")
                out.flush()

    paced(args.rate, args.seconds, args.threads, one)
    out.close()
    print(json.dumps({"codes": codes}))


def corpus(args):
    ks = kinds(args)
    names = sorted(ks)
    lock = threading.Lock()
    sent = {k: {} for k in names}
    visitors = {"events": 0, "acked": 0}

    def one(s, i):
        k = names[i % len(names)]
        code = s.post(ks[k][0]())
        with lock:
            sent[k][code] = sent[k].get(code, 0) + 1

    def flood(s, i):
        evs = [event(args) for _ in range(50)]
        code = s.post(payload(evs))
        with lock:
            visitors["events"] += len(evs)
            if code == 200:
                visitors["acked"] += len(evs)

    ts = [threading.Thread(target=paced, args=(args.rate, args.seconds, args.threads, one))]
    if args.visitors:
        ts.append(threading.Thread(target=paced, args=(args.visitors / 50, args.seconds, args.threads, flood)))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"kinds": {k: {"collector": ks[k][1], "extract": ks[k][2], "codes": sent[k]}
                                for k in names}, "visitors": visitors}))


def dump(args):
    os.makedirs(args.dir, exist_ok=True)
    ks = kinds(args)
    for k, (build, _, _) in ks.items():
        with open(os.path.join(args.dir, k + ".body"), "wb") as f:
            f.write(build())
    with open(os.path.join(args.dir, "kinds.json"), "w") as f:
        json.dump({k: [v[1], v[2] or "-"] for k, v in ks.items()}, f, sort_keys=True)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["steady", "corpus", "dump"])
    p.add_argument("dir", nargs="?")
    p.add_argument("--port", type=int)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--visitors", type=float, default=0)
    p.add_argument("--acked")
    p.add_argument("--store", default="http://127.0.0.1:8080")
    p.add_argument("--app", default="shopify-nu-recommendations")
    p.add_argument("--origin")
    ARGS = args = p.parse_args()
    args.origin = args.origin or args.store
    if args.mode == "dump":
        if not args.dir:
            p.error("dump needs DIR")
        dump(args)
    elif args.mode == "steady":
        if not (args.port and args.acked):
            p.error("steady needs --port and --acked")
        steady(args)
    else:
        if not args.port:
            p.error("corpus needs --port")
        corpus(args)


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
