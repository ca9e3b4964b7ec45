#!/usr/bin/env python3
"""MLflow scoring protocol test server: the seed model's signature, answers
from the seed catalog, and the failures a model step must survive.

  python3 scripts/testservers/mlflow.py [--port N] [--timestamps string|long|any]
      [--top-k 20] [--bearer TOKEN] [--oauth [oauth options]] [--token-secret S]

Prints its base URL as the first line. Paths (any prefix, so
<url>/serving-endpoints/NAME/invocations works as on Databricks):

  GET  .../ping, .../health   200
  POST .../invocations        Content-Type application/json (else 415), body
       {"dataframe_split": {"columns": [...], "data": [[...]]}}, or
       {"dataframe_records": [{...}]}, {"inputs": [{...}]}, {"instances": [{...}]}
       (exactly one of them; other keys are ignored, as MLflow does). Columns:
       userId (string; numbers are taken as text, as MLflow does), items (list
       of strings), timestamps (optional, a list as long as items; its element
       type is --timestamps: "string" the seed model's signature, the default;
       "long" an Array(long) signature; "any"). Extra columns are
       ignored. Bad shapes answer 400 {"error_code": "BAD_REQUEST", "message"}
       like MLflow 3.17 (columnar inputs, rows of another width, a missing
       column, a wrong element type). Answer per row, in row order:
       {"predictions": [{"itemIds": [GID, ...], "preds": [...]}]}.

Recommendations (deterministic): the catalog is the sorted handles of
scripts/mlflow/inventory.json's handle_to_id; start = (sum of the bytes of
userId and of every item) mod the catalog size; the answer is the next --top-k
handles from start on, cyclically, leaving out the viewed ones, as their GIDs;
preds[r] = round((K - r) / (K + 1), 6).
userId hooks, as scripts/mlflow/model.py's: "__fail__" answers 400,
"__sleep_<ms>__" waits <ms> first.

Auth: --bearer TOKEN requires "Authorization: Bearer TOKEN"; --oauth also
serves the token endpoint of scripts/testservers/oauth.py at /oidc/v1/token and
requires its tokens; --token-secret S alone requires tokens of a separate
oauth.py started with the same secret. A missing, unknown, expired or revoked
token answers 401.

/_control keys besides the common ones (scripts/testservers/common.py):
  "mode": "bare"            answer the bare list of predictions (no wrapper)
  {"inject_ids": [...]}     put these ids first in every itemIds
  {"timestamps": "long"}    change the accepted timestamp type
  {"revoke": true}          tokens issued so far answer 401 (a rotated key)
  {"expires_in": SECONDS}   (--oauth) lifetime of tokens issued from now on
/_stats adds invocations and rows, and token_requests, tokens_issued (--oauth).
"""

import json
import os
import re
import time

import common
import oauth

HERE = os.path.dirname(os.path.abspath(__file__))
INVENTORY = os.path.join(HERE, "..", "mlflow", "inventory.json")
INPUT_FIELDS = ("instances", "dataframe_records", "inputs", "dataframe_split")
SLEEP = re.compile(r"^__sleep_(\d+)__$")


def bad_request(message, error_class="INVALID_PARAMETER_VALUE"):
    return common.Answer(400, {"error_code": "BAD_REQUEST", "message": message,
                               "sqlstate": "KAM00", "error_class": error_class})


class Catalog:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            inv = json.load(f)
        self.handle_to_id = inv["handle_to_id"]
        self.handles = sorted(self.handle_to_id)

    def recommend(self, user, items, top_k):
        n = len(self.handles)
        start = (sum(user.encode()) + sum(sum(i.encode()) for i in items)) % n
        viewed = set(items)
        ranked = []
        for k in range(n):
            h = self.handles[(start + k) % n]
            if h not in viewed:
                ranked.append(h)
                if len(ranked) == top_k:
                    break
        return {"itemIds": [self.handle_to_id[h] for h in ranked],
                "preds": [round((top_k - r) / (top_k + 1), 6) for r in range(len(ranked))]}


class MLflowHandler(common.Handler):
    catalog = None
    authority = None       # oauth.TokenAuthority when tokens are required
    serves_tokens = False  # the token endpoint is served here (--oauth)
    bearer = None
    settings = {"timestamps": "string", "top_k": 20, "inject_ids": []}
    counts = {"invocations": 0, "rows": 0}

    def serve(self, method, path, query, headers, body, spec):
        if self.serves_tokens and path == oauth.TOKEN_PATH:
            status, out = self.authority.token_endpoint(method, headers, body)
            return status, out, {"Cache-Control": "no-store"}
        if path.endswith("/ping") or path.endswith("/health"):
            return 200, "\n", {"Content-Type": "application/json"}
        if not path.endswith("/invocations"):
            raise common.Answer(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no endpoint {path}"})
        if method != "POST":
            raise common.Answer(405, {"error_code": "BAD_REQUEST", "message": "use POST"})
        self.authenticate(headers)
        ctype = common.media_type(headers)
        if ctype != "application/json":
            raise common.Answer(415, "This predictor only supports the following content types: Types: "
                                "['text/csv', 'application/json', 'application/vnd.apache.parquet']. "
                                f"Got '{ctype}'.")
        rows = self.rows(body)
        with self.state.lock:
            self.counts["invocations"] += 1
            self.counts["rows"] += len(rows)
        out = [self.predict(r) for r in rows]
        if spec.get("mode") == "bare":
            return 200, out, {}
        return 200, {"predictions": out}, {}

    def authenticate(self, headers):
        if self.bearer is None and self.authority is None:
            return
        token = common.header_token(headers)
        if self.bearer is not None:
            why = None if token == self.bearer else (
                "Credential was not sent or was of an unsupported type for this API." if token is None
                else "Invalid access token.")
        else:
            why = self.authority.check(token)
        if why:
            raise common.Answer(401, {"error_code": "401", "message": why})

    def rows(self, raw):
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise bad_request(f"Invalid input. Failed to parse the request body as JSON: {e}")
        if not isinstance(doc, dict):
            raise bad_request("Invalid input. The input must be a JSON dictionary with exactly one of the input "
                              f"fields {set(INPUT_FIELDS)}. Received a {type(doc).__name__}.")
        given = [k for k in INPUT_FIELDS if k in doc]
        if len(given) != 1:
            raise bad_request("Invalid input. The input must be a JSON dictionary with exactly one of the input "
                              f"fields {set(INPUT_FIELDS)}. Received dictionary with input fields: {given}.")
        field, data = given[0], doc[given[0]]
        if field == "dataframe_split":
            rows = self.split_rows(data)
        elif isinstance(data, dict):
            if field == "dataframe_records":
                raise bad_request("Invalid input. Dataframe records format must be a list of records. "
                                  "Got dictionary.")
            raise bad_request("Invalid input. setting an array element with a sequence")
        elif not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise bad_request(f"Invalid input. {field} must be a list of records (JSON objects).")
        else:
            rows = data
        return [self.check_row(r) for r in rows]

    def split_rows(self, data):
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise bad_request("Invalid input. Provided dataframe_split field is not a valid dataframe "
                              "representation in 'split' format.")
        columns = data.get("columns")
        rows = data["data"]
        if columns is None:
            raise bad_request("Failed to enforce schema: Model is missing inputs ['userId', 'items'].",
                              "SCHEMA_ENFORCEMENT_FAILED")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise bad_request("Invalid input. dataframe_split columns must be a list of strings.")
        out = []
        for row in rows:
            if not isinstance(row, list) or len(row) != len(columns):
                width = len(row) if isinstance(row, list) else 1
                raise bad_request("Invalid input. Provided dataframe_split field is not a valid dataframe "
                                  f"representation in 'split' format. Error: '{len(columns)} columns passed, "
                                  f"passed data had {width} columns'")
            out.append(dict(zip(columns, row)))
        return out

    def check_row(self, row):
        missing = [c for c in ("userId", "items") if c not in row]
        if missing:
            raise bad_request(f"Failed to enforce schema: Model is missing inputs {missing}.",
                              "SCHEMA_ENFORCEMENT_FAILED")
        user = row["userId"]
        if isinstance(user, (int, float)) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(user, str):
            raise bad_request("Invalid input. Data is not compatible with model signature. "
                              "Failed to convert column userId to type 'string'.")
        items = row["items"]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad_request("Invalid input. Data is not compatible with model signature. Failed to convert "
                              "column items to type 'Array(string)'. Error: 'Expected a list of strings'")
        stamps = row.get("timestamps")
        if stamps is not None:
            self.check_stamps(stamps, len(items))
        if user == "__fail__":
            raise bad_request("Encountered an unexpected error while evaluating the model. Verify that the "
                              "serialized input Dataframe is compatible with the model for inference.")
        m = SLEEP.match(user)
        if m:
            time.sleep(int(m.group(1)) / 1000.0)
        return {"userId": user, "items": items}

    def check_stamps(self, stamps, n):
        kind = self.settings["timestamps"]
        if not isinstance(stamps, list):
            raise bad_request("Invalid input. Data is not compatible with model signature. Failed to convert "
                              "column timestamps: expected a list.")
        for t in stamps:
            is_int = isinstance(t, int) and not isinstance(t, bool)
            if kind == "long" and not is_int:
                raise bad_request("Invalid input. Data is not compatible with model signature. Failed to "
                                  "convert column timestamps to type 'Array(long)'. Error: 'Incompatible input "
                                  f"types for column . Can not safely convert {type(t).__name__} to int64.'")
            if kind == "string" and not isinstance(t, str):
                raise bad_request("Invalid input. Data is not compatible with model signature. Failed to "
                                  "convert column timestamps to type 'Array(string)'. Error: 'Incompatible "
                                  f"input types for column . Can not safely convert {type(t).__name__} to str.'")
        if len(stamps) != n:
            raise bad_request("Encountered an unexpected error while evaluating the model: items has "
                              f"{n} entries but timestamps has {len(stamps)}")

    def predict(self, row):
        p = self.catalog.recommend(row["userId"], row["items"], self.settings["top_k"])
        inject = list(self.settings["inject_ids"])
        if inject:
            p = {"itemIds": inject + p["itemIds"], "preds": [1.0] * len(inject) + p["preds"]}
        return p

    def error_body(self, status, spec):
        return {"error_code": "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST",
                "message": f"test server answering {status}"}

    def garbage(self, spec):
        return {"predictions": [{"items": "not what the model returns"}]}

    def control_extra(self, req):
        if "timestamps" in req:
            if req["timestamps"] not in ("string", "long", "any"):
                raise ValueError("timestamps must be string, long or any")
            self.settings["timestamps"] = req["timestamps"]
        if "inject_ids" in req:
            if not isinstance(req["inject_ids"], list):
                raise ValueError("inject_ids must be a list")
            self.settings["inject_ids"] = req["inject_ids"]
        if "top_k" in req:
            self.settings["top_k"] = int(req["top_k"])
        if req.get("reset"):
            self.counts.update(invocations=0, rows=0)
            self.settings["inject_ids"] = []
        out = dict(self.settings)
        if self.authority is not None:
            if req.get("revoke"):
                self.authority.revoke()
            if self.serves_tokens:
                out.update(self.authority.control(req))
        return out

    def stats_extra(self):
        out = dict(self.counts)
        if self.serves_tokens:
            out.update(self.authority.stats())
        return out


def main():
    p = common.arg_parser(__doc__)
    p.add_argument("--timestamps", choices=("string", "long", "any"), default="string")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--catalog", default=INVENTORY, help="inventory.json with handle_to_id")
    p.add_argument("--bearer", default=os.environ.get("SLUICE_TEST_BEARER"), help="required bearer token")
    p.add_argument("--oauth", action="store_true", help="serve /oidc/v1/token and require its tokens")
    oauth.add_arguments(p)
    args = p.parse_args()
    MLflowHandler.state = common.State(("bare",))
    MLflowHandler.catalog = Catalog(args.catalog)
    MLflowHandler.settings = {"timestamps": args.timestamps, "top_k": args.top_k, "inject_ids": []}
    MLflowHandler.counts = {"invocations": 0, "rows": 0}
    MLflowHandler.bearer = args.bearer
    if args.oauth or args.token_secret:
        MLflowHandler.authority = oauth.authority_from(args)
        MLflowHandler.serves_tokens = args.oauth
    common.serve_forever(MLflowHandler, args.port, args.verbose)


if __name__ == "__main__":
    main()
