"""Deterministic stand-in for the seed's SLi-Rec recommendation model.

Served by scripts/mlflow.sh with ``mlflow models serve`` so sluice's model step
can be tested against a real MLflow scoring server. It speaks the seed model's
signature:

  input columns   userId      string
                  items       list of strings: product handles (URL slugs),
                              oldest first
                  timestamps  list of strings of digits (ms), one per item, as
                              the seed model's signature has them (Array(string))
  output per row  {"itemIds": [string, ...], "preds": [double, ...]}

The catalog is scripts/mlflow/inventory.json (the seed store's inventory):
``categories`` (category -> product titles), ``title_to_handle`` and
``handle_to_id`` (handle -> Shopify product GID).

Ranking rule (everything a test needs to derive the expected answer):

1. The catalog is every handle of ``handle_to_id`` (238). A handle's categories
   are those listing a title whose ``title_to_handle`` is that handle: usually
   one, two for the four titles listed in two categories (``water-bottle-1``,
   ``towel-1``, ``face-mask-1``, ``protein-powder-1``), none for the four
   handles no title maps to (``water-bottle``, ``towel``, ``face-mask``,
   ``protein-powder``).
2. For each category C: n(C) = how many entries of ``items`` (repeats count)
   are handles of C, last(C) = the largest 0-based position in ``items`` of
   such an entry (-1 if none). Items not in the catalog are ignored.
3. Candidates are the catalog handles that do not occur in ``items``. A
   candidate's key is the largest (n(C), last(C)) over its categories, (0, -1)
   if it has none.
4. Candidates are sorted by key descending (more views of the category first,
   then the more recently viewed category first), then by handle ascending
   (plain string order). So with no known items the answer is the catalog in
   handle order.
5. The first TOP_K = 20 are returned: ``itemIds[r]`` is the candidate's GID,
   ``preds[r] = round((TOP_K - r) / (TOP_K + 1), 6)`` for rank r = 0..19
   (0.952381, 0.904762, ..., 0.047619): strictly descending, in (0, 1).

``timestamps`` is accepted and not used by the ranking; when both lists are
present they must have the same length, else the row fails (the server then
answers with an error, HTTP 400).

Test hooks, by ``userId``:
  ``__fail__``           predict raises (the server answers with an error)
  ``__sleep_<ms>__``     predict sleeps <ms> milliseconds before answering
                         (for timeout specs), e.g. ``__sleep_1500__``
"""

import json
import re
import time

import mlflow
from mlflow.pyfunc import PythonModel

TOP_K = 20
_SLEEP = re.compile(r"^__sleep_(\d+)__$")


def _as_list(value):
    """Lists arrive as lists, numpy arrays or None depending on the format."""
    if value is None:
        return []
    if isinstance(value, float):  # NaN from a missing cell
        return []
    if isinstance(value, str):
        # a JSON-encoded list sent as a string column
        value = json.loads(value)
    return list(value)


class Catalog:
    def __init__(self, inventory):
        self.handle_to_id = dict(inventory["handle_to_id"])
        title_to_handle = inventory["title_to_handle"]
        self.categories = {h: [] for h in self.handle_to_id}
        for category, titles in inventory["categories"].items():
            for title in titles:
                handle = title_to_handle.get(title)
                if handle in self.categories and category not in self.categories[handle]:
                    self.categories[handle].append(category)
        self.handles = sorted(self.handle_to_id)

    def recommend(self, items):
        count, last = {}, {}
        for pos, handle in enumerate(items):
            for category in self.categories.get(handle, ()):
                count[category] = count.get(category, 0) + 1
                last[category] = pos
        viewed = set(items)

        def key(handle):
            best = (0, -1)
            for category in self.categories[handle]:
                k = (count.get(category, 0), last.get(category, -1))
                if k > best:
                    best = k
            return (-best[0], -best[1], handle)

        ranked = sorted((h for h in self.handles if h not in viewed), key=key)[:TOP_K]
        return {
            "itemIds": [self.handle_to_id[h] for h in ranked],
            "preds": [round((TOP_K - r) / (TOP_K + 1), 6) for r in range(len(ranked))],
        }


class Recommender(PythonModel):
    def load_context(self, context):
        with open(context.artifacts["inventory"], encoding="utf-8") as f:
            self.catalog = Catalog(json.load(f))

    def predict(self, context, model_input, params=None):
        if hasattr(model_input, "to_dict"):
            rows = model_input.to_dict(orient="records")
        elif isinstance(model_input, dict):
            rows = [model_input]
        else:
            rows = list(model_input)
        out = []
        for row in rows:
            user = row.get("userId")
            if user == "__fail__":
                raise ValueError("model failure requested by userId __fail__")
            m = _SLEEP.match(str(user or ""))
            if m:
                time.sleep(int(m.group(1)) / 1000.0)
            items = [str(i) for i in _as_list(row.get("items"))]
            stamps = _as_list(row.get("timestamps"))
            for s in stamps:
                if not str(s).isdigit():
                    raise ValueError(f"timestamps must be strings of digits (ms), got {s!r}")
            if stamps and len(stamps) != len(items):
                raise ValueError(
                    f"items has {len(items)} entries but timestamps has {len(stamps)}")
            out.append(self.catalog.recommend(items))
        return out


mlflow.models.set_model(Recommender())
