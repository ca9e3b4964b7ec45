"""What the sluice test servers share: a threaded HTTP/1.1 server on 127.0.0.1
that prints its URL, records what it receives and is steered by a control
endpoint. Python 3.11 standard library only. Test infrastructure: sluice
never needs Python.

Every server answers, besides its own paths:

  POST /_control   JSON, changes how the next requests are answered:
                     {"mode": M, ...}            from now on (the default mode)
                     {"mode": M, "times": N, ...} the next N requests only, then
                                                 the default again (queued in order)
                     {"delays": [ms, ...]}       extra delay per request, cycled:
                                                 request k waits delays[k % len]
                                                 (reorders responses of requests
                                                 in flight together)
                     {"reset": true}             default mode normal, queue, delays,
                                                 received requests and counters cleared
                   plus keys of the server's own (see each server). Answers the
                   control state as JSON.
  GET  /_received  the requests received so far (not /_ ones), one JSON object
                   a line: seq, t_ms, method, path, headers (lower-case names),
                   body, then status, mode and done_ms once answered.
                   ?since=N gives those with seq > N.
  GET  /_stats     counters: requests, answered, in_flight, max_in_flight,
                   by_status, plus the server's own.

Modes every server knows (a mode's options go beside "mode"):
  normal                       answer as the real service would
  slow      delay_ms           wait, then answer normally
  status    status, body       answer that status with the service's error body
  "429", "500", "503", ...     the same as status with that status
            retry_after        seconds for Retry-After (429 and 503; default 1)
  garbage   garbage            200 with a body the client cannot use: "text" (not
                               JSON, the default), "json" (JSON of the wrong shape),
                               "truncated" (cut in the middle)
  close                        close the connection without answering
Any mode also takes delay_ms (waited before answering) and path (it then
applies only to requests whose path contains that text; others are answered
normally and leave the queue alone).
"""

import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BASE_MODES = {"normal", "slow", "status", "garbage", "close"}


def now_ms():
    return int(time.time() * 1000)


class State:
    """Mode, queue, delays, received requests and counters of one server.
    Every method takes the lock."""

    def __init__(self, modes):
        self.lock = threading.Lock()
        self.modes = BASE_MODES | set(modes)
        self.reset()

    def reset(self):
        self.default = {"mode": "normal"}
        self.queue = []
        self.delays = []
        self.received = []
        self.seq = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_status = {}
        self.answered = 0

    def check_mode(self, spec):
        mode = str(spec.get("mode", "normal"))
        if re.fullmatch(r"[1-5]\d\d", mode):
            spec = dict(spec, mode="status", status=int(mode))
            mode = "status"
        if mode not in self.modes:
            raise ValueError(f"unknown mode {mode!r}; known: {sorted(self.modes)}")
        return spec

    def control(self, req):
        """Applies a /_control request (a dict); returns the state."""
        with self.lock:
            if req.get("reset"):
                self.reset()
            if "delays" in req:
                delays = req["delays"]
                if not isinstance(delays, list) or not all(isinstance(d, (int, float)) and d >= 0 for d in delays):
                    raise ValueError("delays must be a list of milliseconds")
                self.delays = list(delays)
            if "mode" in req:
                spec = {k: v for k, v in req.items() if k not in ("reset", "delays", "times")}
                spec = self.check_mode(spec)
                times = req.get("times")
                if times is None:
                    self.default = spec
                else:
                    if not isinstance(times, int) or times < 1:
                        raise ValueError("times must be a whole number >= 1")
                    self.queue.extend([spec] * times)
            return self.describe()

    def describe(self):
        return {"default": self.default, "queue": self.queue, "delays": self.delays}

    def begin(self, method, path, headers, body):
        """Records a request; returns (record, mode spec, extra delay ms)."""
        with self.lock:
            self.seq += 1
            rec = {"seq": self.seq, "t_ms": now_ms(), "method": method, "path": path,
                   "headers": headers, "body": body}
            self.received.append(rec)
            spec = {"mode": "normal"}
            for i, queued in enumerate(self.queue):
                if queued.get("path", "") in path:
                    spec = self.queue.pop(i)
                    break
            else:
                if self.default.get("path", "") in path:
                    spec = self.default
            delay = self.delays[(self.seq - 1) % len(self.delays)] if self.delays else 0
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return rec, dict(spec), delay

    def end(self, rec, status, mode):
        with self.lock:
            self.in_flight -= 1
            self.answered += 1
            rec["status"], rec["mode"], rec["done_ms"] = status, mode, now_ms()
            key = str(status)
            self.by_status[key] = self.by_status.get(key, 0) + 1

    def stats(self):
        with self.lock:
            return {"requests": self.seq, "answered": self.answered, "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight, "by_status": dict(self.by_status)}

    def received_since(self, since):
        with self.lock:
            return [dict(r) for r in self.received if r["seq"] > since]


class Answer(Exception):
    """Raised by a service handler to answer at once: status, JSON or text body, headers."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class Handler(BaseHTTPRequestHandler):
    """Base request handler. A server subclasses it and sets:
      state       a State
      verbose     log each request to stderr
    and implements serve(method, path, query, headers, body, spec) ->
    (status, body, headers) for its own paths, and optionally error_body(status,
    spec), garbage(spec), control_extra(req) and stats_extra()."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: without TCP_NODELAY the body
    # waits for the client's delayed ACK (40 ms) on every kept-alive request.
    disable_nagle_algorithm = True
    server_version = "sluice-testserver/1"
    state = None
    verbose = False

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        if self.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    # ---- reading and writing ----

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, body, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            ctype = "application/json"
        else:
            ctype = "text/plain; charset=utf-8"
        data = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        self.send_response(status)
        hdrs = {"Content-Type": ctype}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # ---- dispatch ----

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        url = urlsplit(self.path)
        body = self.read_body()
        if url.path.startswith("/_"):
            self.test_endpoint(method, url.path, parse_qs(url.query), body)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        text = body.decode("utf-8", errors="replace")
        rec, spec, delay = self.state.begin(method, url.path, headers, text)
        self.current_seq = rec["seq"]
        mode, status = spec.get("mode", "normal"), 0
        try:
            wait = delay + float(spec.get("delay_ms", 0) or 0)
            if wait > 0:
                time.sleep(wait / 1000.0)
            if mode == "close":
                self.close_connection = True
                return
            status, out, hdrs = self.answer(mode, spec, method, url, headers, body)
            self.send(status, out, hdrs)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.state.end(rec, status, mode)

    def answer(self, mode, spec, method, url, headers, body):
        if mode == "status":
            status = int(spec.get("status", 500))
            hdrs = {}
            if status in (429, 503):
                hdrs["Retry-After"] = str(spec.get("retry_after", 1))
            out = spec["body"] if "body" in spec else self.error_body(status, spec)
            return status, out, hdrs
        if mode == "garbage":
            kind = spec.get("garbage", "text")
            if kind == "json":
                return 200, self.garbage(spec), {}
            if kind == "truncated":
                return 200, '{"predictions": [{"itemIds": ["gid://shopify/Pro', {"Content-Type": "application/json"}
            return 200, "<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"}
        try:
            return self.serve(method, url.path, parse_qs(url.query), headers, body, spec)
        except Answer as a:
            return a.status, a.body, a.headers

    def test_endpoint(self, method, path, query, body):
        try:
            if path == "/_control" and method == "POST":
                req = json.loads(body or b"{}")
                if not isinstance(req, dict):
                    raise ValueError("expected a JSON object")
                extra = self.control_extra(req)
                out = self.state.control(req)
                out.update(extra)
                self.send(200, out)
            elif path == "/_received" and method == "GET":
                since = int(query.get("since", ["0"])[0])
                lines = "".join(json.dumps(r) + "\n" for r in self.state.received_since(since))
                self.send(200, lines, {"Content-Type": "application/x-ndjson"})
            elif path == "/_stats" and method == "GET":
                out = self.state.stats()
                out.update(self.stats_extra())
                self.send(200, out)
            else:
                self.extra_test_endpoint(method, path, query, body)
        except (ValueError, TypeError) as e:
            self.send(400, {"error": str(e)})

    # ---- for subclasses ----

    def serve(self, method, path, query, headers, body, spec):
        raise Answer(404, {"error": "not found"})

    def error_body(self, status, spec):
        return {"error": f"HTTP {status}"}

    def garbage(self, spec):
        return {"unexpected": True}

    def control_extra(self, req):
        return {}

    def stats_extra(self):
        return {}

    def extra_test_endpoint(self, method, path, query, body):
        self.send(404, {"error": f"no test endpoint {method} {path}"})


def arg_parser(description):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def serve_forever(handler_cls, port, verbose=False):
    """Binds 127.0.0.1:port, prints the base URL as the first line of stdout,
    serves until SIGTERM/SIGINT."""
    handler_cls.verbose = verbose
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler_cls)
    httpd.daemon_threads = True
    print(f"http://127.0.0.1:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


def header_token(headers):
    """The token of an "Authorization: Bearer <token>" header, or None."""
    auth = headers.get("authorization", "")
    m = re.fullmatch(r"Bearer\s+(\S+)", auth.strip())
    return m.group(1) if m else None


def media_type(headers):
    """The Content-Type without parameters, lower-case ("" when absent)."""
    return headers.get("content-type", "").split(";")[0].strip().lower()
