#!/usr/bin/env python3
"""Shopify Admin GraphQL test server for the metaobjectUpsert of the
recommendations job: as strict as the real API about what the rule sends, with
its answers, its cost bucket and its failures.

  python3 scripts/testservers/shopify.py [--port N] [--token T]
      [--api-version 2026-07] [--type nu_recommendation] [--field products]
      [--max-available 2000] [--restore-rate 100] [--cost 10]

Prints its base URL as the first line; the store is that URL (SHOPIFY_STORE).

POST /admin/api/<version>/graphql.json (another version or path: 404)
  X-Shopify-Access-Token must be --token (default shpat_test_token; env
    SLUICE_TEST_SHOPIFY_TOKEN): else 401 with Shopify's body
  Content-Type application/json, body {"query", "variables"[, "operationName"]}
  query: exactly the text of spec/fixtures/shopify/upsert-metaobject.admin.graphql
    (trailing newline aside), else 200 with a top-level error
  variables, checked as GraphQL input coercion does (200 with a top-level
    error naming the problem): exactly handle and metaobject; handle =
    {handle: "customer-<id>", type: String}; metaobject = {fields: [{key:
    String, value: String}, ...]} (handle and capabilities allowed too);
    unknown or missing input fields and non-strings are refused
  then as the store would (200 with userErrors): type must be --type
    (UNDEFINED_OBJECT_TYPE), every key --field (UNDEFINED_OBJECT_FIELD), the
    value a JSON list of product GIDs of the catalog (scripts/mlflow/
    inventory.json) (INVALID_VALUE)
  success: {"data": {"metaobjectUpsert": {"metaobject": {"id": ...},
    "userErrors": []}}, "extensions": {"cost": {requestedQueryCost,
    actualQueryCost, throttleStatus: {maximumAvailable, currentlyAvailable,
    restoreRate}}}}; the value is stored per handle.
  Cost bucket: each upsert takes --cost points from a bucket of
    --max-available refilled at --restore-rate points/s; an upsert the bucket
    cannot pay answers THROTTLED (HTTP 200, errors[].extensions.code, the cost
    with actualQueryCost null) and changes nothing.

Modes besides the common ones (scripts/testservers/common.py):
  throttled     drains the bucket, so this request (and the next ones until
                it refills) answers THROTTLED
  user_errors   a userErrors answer (INVALID_VALUE on the value), nothing stored
  ("429" sends Retry-After; "500" Shopify's internal error body)
/_control keys: {"bucket": {"maximumAvailable", "currentlyAvailable",
  "restoreRate", "cost"}} sets the cost bucket; {"check_catalog": false} takes
  any product GID.
GET /_metaobjects -> {"metaobjects": {handle: {id, type, fields: {key: value},
  updates}}, "history": [{seq, handle, type, fields, request_seq}]}: the latest
  value per handle and every stored upsert in the order it was applied.
/_stats adds upserts, throttled and the bucket.
"""

import json
import os
import re
import threading
import time

import common

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
QUERY_FILE = os.path.join(ROOT, "spec", "fixtures", "shopify", "upsert-metaobject.admin.graphql")
INVENTORY = os.path.join(ROOT, "scripts", "mlflow", "inventory.json")
PATH = re.compile(r"^/admin/api/([^/]+)/graphql\.json$")
GID = re.compile(r"^gid://shopify/Product/\d+$")
UNAUTHORIZED = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}


def variable_error(var, decl, value, problems):
    """A top-level error as graphql-ruby reports an invalid variable."""
    explained = "; ".join(f"{'.'.join(map(str, p))}: {e}" if p else e for p, e in problems)
    return {"errors": [{"message": f"Variable ${var} of type {decl} was provided invalid value"
                        + (f" ({explained})" if explained else ""),
                        "locations": [{"line": 1, "column": 26 if var == "metaobject" else 64}],
                        "extensions": {"value": value,
                                       "problems": [{"path": p, "explanation": e} for p, e in problems]}}]}


def input_object(value, path, allowed, required, problems, type_name):
    """Checks a GraphQL input object: a JSON object with only `allowed` keys
    and every `required` one; appends (path, explanation) problems."""
    if not isinstance(value, dict):
        problems.append((path, f"Expected value to be an input object ({type_name})"))
        return False
    for k in value:
        if k not in allowed:
            problems.append((path + [k], f"Field is not defined on {type_name}"))
    for k in required:
        if value.get(k) is None:
            problems.append((path + [k], "Expected value to not be null"))
    return True


def string_field(value, path, key, problems):
    v = value.get(key)
    if v is not None and not isinstance(v, str):
        problems.append((path + [key], "Could not coerce value to String"))


class Store:
    """Metaobjects, history and the cost bucket; thread-safe."""

    def __init__(self, max_available, restore_rate, cost):
        self.lock = threading.Lock()
        self.metaobjects, self.history = {}, []
        self.next_id = 128934567890
        self.max_available, self.restore_rate, self.cost = float(max_available), float(restore_rate), cost
        self.available, self.refilled = float(max_available), time.monotonic()
        self.upserts = self.throttled = 0

    def refill(self):
        t = time.monotonic()
        self.available = min(self.max_available, self.available + (t - self.refilled) * self.restore_rate)
        self.refilled = t

    def cost_ext(self, actual):
        return {"cost": {"requestedQueryCost": self.cost, "actualQueryCost": actual,
                         "throttleStatus": {"maximumAvailable": self.max_available,
                                            "currentlyAvailable": int(self.available),
                                            "restoreRate": self.restore_rate}}}

    def throttled_answer(self):
        self.throttled += 1
        return {"errors": [{"message": "Throttled",
                            "extensions": {"code": "THROTTLED",
                                           "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": self.cost_ext(None)}

    def upsert(self, handle, mtype, fields, request_seq, force_throttle=False):
        """The answer body of an upsert that passed every check."""
        with self.lock:
            self.refill()
            if force_throttle:
                self.available = 0.0  # as if other clients had drained it
            if self.available < self.cost:
                return self.throttled_answer()
            self.available -= self.cost
            mo = self.metaobjects.get(handle)
            if mo is None or mo["type"] != mtype:
                mo = {"id": f"gid://shopify/Metaobject/{self.next_id}", "type": mtype, "fields": {}, "updates": 0}
                self.next_id += 1
                self.metaobjects[handle] = mo
            for f in fields:
                mo["fields"][f["key"]] = f["value"]
            mo["updates"] += 1
            self.upserts += 1
            self.history.append({"seq": len(self.history) + 1, "handle": handle, "type": mtype,
                                 "fields": {f["key"]: f["value"] for f in fields}, "request_seq": request_seq})
            return {"data": {"metaobjectUpsert": {"metaobject": {"id": mo["id"]}, "userErrors": []}},
                    "extensions": self.cost_ext(self.cost)}

    def user_errors(self, errors):
        with self.lock:
            self.refill()
            self.available = max(0.0, self.available - self.cost)
            return {"data": {"metaobjectUpsert": {"metaobject": None, "userErrors": errors}},
                    "extensions": self.cost_ext(self.cost)}

    def set_bucket(self, b):
        with self.lock:
            self.refill()
            self.max_available = float(b.get("maximumAvailable", self.max_available))
            self.restore_rate = float(b.get("restoreRate", self.restore_rate))
            self.cost = b.get("cost", self.cost)
            self.available = float(b.get("currentlyAvailable", min(self.available, self.max_available)))

    def snapshot(self):
        with self.lock:
            return {"metaobjects": json.loads(json.dumps(self.metaobjects)), "history": list(self.history)}

    def stats(self):
        with self.lock:
            self.refill()
            return {"upserts": self.upserts, "throttled": self.throttled,
                    "bucket": {"maximumAvailable": self.max_available, "currentlyAvailable": int(self.available),
                               "restoreRate": self.restore_rate, "cost": self.cost}}


class ShopifyHandler(common.Handler):
    store = None
    token = None
    api_version = None
    mtype = None
    field = None
    query = None
    catalog = None
    check_catalog = True

    def serve(self, method, path, query, headers, body, spec):
        m = PATH.match(path)
        if not m or m.group(1) != self.api_version:
            raise common.Answer(404, {"errors": "Not Found"})
        if method != "POST":
            raise common.Answer(405, {"errors": "Method Not Allowed"})
        if headers.get("x-shopify-access-token") != self.token:
            raise common.Answer(401, UNAUTHORIZED)
        if common.media_type(headers) != "application/json":
            raise common.Answer(415, {"errors": "Unsupported Media Type: use application/json"})
        try:
            doc = json.loads(body)
        except ValueError:
            raise common.Answer(400, {"errors": {"query": "Required parameter missing or invalid"}})
        if not isinstance(doc, dict) or not isinstance(doc.get("query"), str):
            raise common.Answer(400, {"errors": {"query": "Required parameter missing or invalid"}})
        self.check_query(doc)
        handle, mtype, fields = self.check_variables(doc.get("variables"))
        mode = spec.get("mode")
        if mode == "user_errors":
            return 200, self.store.user_errors([self.invalid_value(0, "Value is invalid (test server mode).")]), {}
        errors = self.store_errors(mtype, fields)
        if errors:
            return 200, self.store.user_errors(errors), {}
        return 200, self.store.upsert(handle, mtype, fields, self.current_seq, mode == "throttled"), {}

    def check_query(self, doc):
        if doc["query"] != self.query:
            raise common.Answer(200, {"errors": [{"message": "sluice test server: the query text is not the "
                                                  "UpsertMetaobject mutation of spec/fixtures/shopify/"
                                                  "upsert-metaobject.admin.graphql, byte for byte",
                                                  "extensions": {"code": "UNEXPECTED_QUERY"}}]})
        name = doc.get("operationName")
        if name not in (None, "UpsertMetaobject"):
            raise common.Answer(200, {"errors": [{"message": f"No operation named \"{name}\""}]})

    def check_variables(self, variables):
        if not isinstance(variables, dict):
            variables = {}
        for name in variables:
            if name not in ("handle", "metaobject"):
                raise common.Answer(200, {"errors": [{"message": f"Variable ${name} is not defined by "
                                                      "operation 'UpsertMetaobject'"}]})
        h = variables.get("handle")
        problems = []
        if h is None:
            problems.append(([], "Expected value to not be null"))
        elif input_object(h, [], ("handle", "type"), ("handle", "type"), problems, "MetaobjectHandleInput"):
            string_field(h, [], "handle", problems)
            string_field(h, [], "type", problems)
            hv = h.get("handle")
            if isinstance(hv, str) and not re.fullmatch(r"customer-[A-Za-z0-9_-]+", hv):
                problems.append((["handle"], "sluice test server: expected \"customer-<userId>\""))
        if problems:
            raise common.Answer(200, variable_error("handle", "MetaobjectHandleInput!", h, problems))
        mo = variables.get("metaobject")
        if mo is None:
            problems.append(([], "Expected value to not be null"))
        elif input_object(mo, [], ("fields", "handle", "capabilities"), (), problems, "MetaobjectUpsertInput"):
            fields = mo.get("fields")
            if fields is not None and not isinstance(fields, list):
                fields = [fields]  # GraphQL coerces a single value into a list
            for i, f in enumerate(fields or []):
                if input_object(f, ["fields", i], ("key", "value"), ("key", "value"), problems,
                                "MetaobjectFieldInput"):
                    string_field(f, ["fields", i], "key", problems)
                    string_field(f, ["fields", i], "value", problems)
        if problems:
            raise common.Answer(200, variable_error("metaobject", "MetaobjectUpsertInput!", mo, problems))
        fields = mo.get("fields") or []
        return h["handle"], h["type"], fields if isinstance(fields, list) else [fields]

    def invalid_value(self, i, message):
        return {"field": ["metaobject", "fields", str(i), "value"], "message": message, "code": "INVALID_VALUE",
                "elementKey": self.field, "elementIndex": None}

    def store_errors(self, mtype, fields):
        if mtype != self.mtype:
            return [{"field": ["handle", "type"], "message": f"No metaobject definition exists for type \"{mtype}\"",
                     "code": "UNDEFINED_OBJECT_TYPE", "elementKey": None, "elementIndex": None}]
        errors = []
        for i, f in enumerate(fields):
            if f["key"] != self.field:
                errors.append({"field": ["metaobject", "fields", str(i), "key"],
                               "message": f"No field definition exists for key \"{f['key']}\"",
                               "code": "UNDEFINED_OBJECT_FIELD", "elementKey": f["key"], "elementIndex": None})
                continue
            try:
                ids = json.loads(f["value"])
            except ValueError:
                errors.append(self.invalid_value(i, "Value is invalid JSON."))
                continue
            if not isinstance(ids, list) or not all(isinstance(x, str) and GID.match(x) for x in ids):
                errors.append(self.invalid_value(i, "Value must be a list of product references."))
            elif self.check_catalog and not all(x in self.catalog for x in ids):
                errors.append(self.invalid_value(i, "Value references a product that does not exist."))
        return errors

    def error_body(self, status, spec):
        if status == 429:
            return {"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume "
                              "uninterrupted service."}
        if status >= 500:
            return {"errors": "Internal Server Error"}
        return {"errors": f"HTTP {status}"}

    def garbage(self, spec):
        return {"data": {"somethingElse": True}}

    def control_extra(self, req):
        if "bucket" in req:
            if not isinstance(req["bucket"], dict):
                raise ValueError("bucket must be an object")
            self.store.set_bucket(req["bucket"])
        if "check_catalog" in req:
            type(self).check_catalog = bool(req["check_catalog"])
        if req.get("reset"):
            b = self.store.stats()["bucket"]
            type(self).store = Store(b["maximumAvailable"], b["restoreRate"], b["cost"])
        return {"bucket": self.store.stats()["bucket"], "check_catalog": self.check_catalog}

    def stats_extra(self):
        return self.store.stats()

    def extra_test_endpoint(self, method, path, query, body):
        if path == "/_metaobjects" and method == "GET":
            self.send(200, self.store.snapshot())
        else:
            super().extra_test_endpoint(method, path, query, body)


def main():
    p = common.arg_parser(__doc__)
    p.add_argument("--token", default=os.environ.get("SLUICE_TEST_SHOPIFY_TOKEN", "shpat_test_token"))
    p.add_argument("--api-version", default="2026-07")
    p.add_argument("--type", default="nu_recommendation", help="the metaobject definition's type")
    p.add_argument("--field", default="products", help="its list.product_reference field")
    p.add_argument("--max-available", type=float, default=2000)
    p.add_argument("--restore-rate", type=float, default=100)
    p.add_argument("--cost", type=int, default=10, help="requested cost of one upsert")
    p.add_argument("--catalog", default=INVENTORY)
    args = p.parse_args()
    with open(QUERY_FILE, encoding="utf-8") as f:
        ShopifyHandler.query = f.read().rstrip("\n")
    with open(args.catalog, encoding="utf-8") as f:
        ShopifyHandler.catalog = set(json.load(f)["handle_to_id"].values())
    ShopifyHandler.state = common.State(("throttled", "user_errors"))
    ShopifyHandler.store = Store(args.max_available, args.restore_rate, args.cost)
    ShopifyHandler.token, ShopifyHandler.api_version = args.token, args.api_version
    ShopifyHandler.mtype, ShopifyHandler.field = args.type, args.field
    common.serve_forever(ShopifyHandler, args.port, args.verbose)


if __name__ == "__main__":
    main()
