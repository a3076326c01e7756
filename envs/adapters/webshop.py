"""WebShop (text mode) for users who have its data files.

    env = make("webshop", data_dir="/data/webshop")       # items_shuffle*.json, items_ins_v2*.json, items_human_ins.json
    obs = env.reset(seed=0)              # seed = goal index (WebShop convention: 0-499 test, 500-1499 dev, 1500+ train)
    env.step("search[blue running shoes]")
    env.step("click[b07xyz1234]"); env.step("click[large]"); env.step("click[buy now]")
    env.gold_actions()                   # search, open the goal product, pick the goal options, buy

WebShop's data (the product scrape and instructions) is not on any package registry, so this
adapter reads the files of the official data release from ``data_dir``:

- products: ``items_shuffle_1000.json`` (or ``items_shuffle.json``): a list of
  ``{asin, name, full_description, small_description, pricing "$12.99" | "$10.00 - $20.00",
  customization_options {name: [{value, image}]}, images, category, query, product_category}``
- attributes: ``items_ins_v2_1000.json`` (or ``items_ins_v2.json``): ``{asin: {attributes: [...],
  instruction, instruction_attributes}}``
- human goals: ``items_human_ins.json``: ``{asin: [{instruction, instruction_attributes,
  instruction_options}]}``; optional ``reviews.json``.

Pages, buttons, actions (``search[...]`` on the search page, ``click[...]`` on a visible
button, product id or option value; anything else changes nothing) and the observation (the
page's visible text joined by `` [SEP] ``, WebShop's "text" mode) follow WebShop's text
environment; the reward on ``click[buy now]`` follows its ``get_reward``:
``r_type * (matched attributes + matched options + price ok) / (#attributes + #options + 1)``.
Differences (no Lucene, no spaCy model offline): search ranks products with our own BM25 over
title, bullet points, description, category and options (WebShop uses a Pyserini index of the
same fields); the product-type title score compares content words instead of spaCy nouns;
colours are compared lower-cased (WebShop also normalises colour synonyms); prices and the goal
order are drawn from ``random.Random(233)`` (WebShop seeds only the goal shuffle). Success =
reward 1. Branching: snapshot/restore of the small page state.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ttsearch.envs.adapters.base import AdapterEnv, Outcome
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError

PRICE_RANGE = [10.0 * i for i in range(1, 100)]
SEARCH_RETURN_N, PRODUCT_WINDOW = 50, 10
SUB_PAGES = ("description", "features", "reviews")
_STOP = set("a an the and or of for with to in on by from at is are be this that these those it its as "
            "set pack pcs piece pieces inch inches x".split())
_WORD = re.compile(r"[a-z0-9]+")


def _find(data_dir: Path, *names: str) -> Path | None:
    return next((data_dir / n for n in names if (data_dir / n).exists()), None)


def load_catalog(data_dir: str | Path, *, human_goals: bool = True, num_products: int | None = None,
                 seed: int = 233) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Products (by asin) and the shuffled goal list, following WebShop's loading rules."""
    data_dir = Path(data_dir)
    prod_file = _find(data_dir, "items_shuffle_1000.json", "items_shuffle.json")
    attr_file = _find(data_dir, "items_ins_v2_1000.json", "items_ins_v2.json")
    human_file = _find(data_dir, "items_human_ins.json")
    if prod_file is None or attr_file is None or (human_goals and human_file is None):
        raise EnvError(f"WebShop data not found in {data_dir}: need items_shuffle_1000.json, "
                       "items_ins_v2_1000.json and (for human goals) items_human_ins.json from WebShop's data release")
    rng = random.Random(seed)
    raw = json.loads(prod_file.read_text())[: num_products or None]
    attrs = json.loads(attr_file.read_text())
    human = json.loads(human_file.read_text()) if human_file else {}
    review_file = _find(data_dir, "reviews.json")
    reviews = {r["asin"]: r for r in json.loads(review_file.read_text())} if review_file else {}
    products: dict[str, dict[str, Any]] = {}
    for p in raw:
        asin = p.get("asin", "nan")
        if asin == "nan" or len(asin) > 10 or asin in products:
            continue
        pricing = p.get("pricing")
        prices = [float(Decimal(re.sub(r"[^\d.]", "", x))) for x in pricing.split("$")[1:]] if pricing else [100.0]
        tag = f"${prices[0]}" if len(prices) == 1 else f"${prices[0]} to ${prices[1]}"
        options: dict[str, list[str]] = {}
        for name, contents in (p.get("customization_options") or {}).items():
            if contents:
                options[name.lower()] = [c["value"].strip().replace("/", " | ").lower() for c in contents]
        small = p.get("small_description") or []
        products[asin] = {
            "asin": asin, "Title": p["name"], "name": p["name"], "Description": p.get("full_description") or "",
            "BulletPoints": small if isinstance(small, list) else [small], "Price": tag, "pricing": prices[:2],
            "options": options, "category": p.get("category", ""), "query": (p.get("query") or "").lower().strip(),
            "product_category": p.get("product_category", ""),
            "Attributes": attrs.get(asin, {}).get("attributes") or ["DUMMY_ATTR"],
            "Rating": reviews.get(asin, {}).get("average_rating", "N.A."),
            "Reviews": [str(r.get("review", r.get("body", ""))) for r in reviews.get(asin, {}).get("reviews", [])],
        }
    prices = {a: (p["pricing"][0] if len(p["pricing"]) == 1 else rng.uniform(*p["pricing"][:2]))
              for a, p in products.items()}
    goals = []
    for asin, product in products.items():
        entries = human.get(asin, []) if human_goals else [attrs.get(asin, {})]
        for entry in entries:
            goal_attrs = entry.get("instruction_attributes") or []
            if not goal_attrs or not entry.get("instruction"):
                continue
            upper_choices = [x for x in PRICE_RANGE if x > prices[asin]][:4]
            if len(upper_choices) >= 2:
                _, upper = sorted(rng.sample(upper_choices, 2))
                price_text = f", and price lower than {upper:.2f} dollars"
            else:
                upper, price_text = 1_000_000.0, ""
            options = entry.get("instruction_options") or []
            goals.append({"asin": asin, "category": product["category"], "query": product["query"],
                          "name": product["name"], "product_category": product["product_category"],
                          "instruction_text": entry["instruction"].strip(".") + price_text,
                          "attributes": goal_attrs, "price_upper": upper,
                          "goal_options": list(options.values()) if isinstance(options, dict) else list(options)})
    rng.shuffle(goals)
    for p in products.values():
        p["price"] = prices[p["asin"]]
    return products, goals


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and not w.isdigit()}


def get_reward(product: dict[str, Any], goal: dict[str, Any], price: float, options: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """WebShop's purchase reward (see the module docstring for the two approximations)."""
    # optional benchmark dependency (make benchmarks): imported when the adapter is used
    from rapidfuzz import fuzz

    query_match = product["query"] == goal["query"]
    cats = {x.strip() for x in product["product_category"].split("›")}
    category_match = len(cats & {x.strip() for x in goal["product_category"].split("›")}) >= 2
    desired = _content_words(goal["name"])
    title_score = len(_content_words(product["name"]) & desired) / len(desired) if desired else 0.2
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    text = " ".join([product["Title"], " ".join(product["BulletPoints"]), product["Description"]]).lower()
    n_attr = 0
    for g in goal["attributes"]:
        if any(fuzz.token_set_ratio(p, g) > 85 for p in product["Attributes"]) or g in text:
            n_attr += 1
    goal_opts = [o.lower() for o in goal["goal_options"]]
    n_opt = 0
    for key, value in options.items():
        value = value.lower()
        hit = value in goal_opts if key.lower() == "size" else any(fuzz.token_set_ratio(g, value) > 85 for g in goal_opts)
        n_opt += bool(hit or value in text)
    r_price = price <= goal["price_upper"] if goal["price_upper"] > 0 else False
    total = (n_attr + n_opt + r_price) / (len(goal["attributes"]) + len(goal["goal_options"]) + 1) * r_type
    return total, {"r_type": r_type, "attr_matches": n_attr, "option_matches": n_opt, "r_price": bool(r_price),
                   "title_score": title_score, "query_match": query_match, "category_match": category_match}


class _BM25:
    def __init__(self, docs: dict[str, str], k1: float = 0.9, b: float = 0.4):  # Pyserini's defaults
        self.k1, self.b = k1, b
        self.tf = {a: Counter(_WORD.findall(t.lower())) for a, t in docs.items()}
        self.len = {a: sum(c.values()) for a, c in self.tf.items()}
        self.avg = sum(self.len.values()) / max(len(self.len), 1)
        df = Counter(w for c in self.tf.values() for w in c)
        n = len(self.tf)
        self.idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}

    def search(self, query: str, k: int) -> list[str]:
        words = _WORD.findall(query.lower())
        scores = {}
        for asin, tf in self.tf.items():
            s = sum(self.idf.get(w, 0.0) * tf[w] * (self.k1 + 1)
                    / (tf[w] + self.k1 * (1 - self.b + self.b * self.len[asin] / self.avg)) for w in words if w in tf)
            if s > 0:
                scores[asin] = s
        return [a for a, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))][:k]


class WebShopEnv(AdapterEnv):
    """WebShop text mode over a local copy of its data; ``reset(seed=k)`` plays goal k."""

    def __init__(self, *, data_dir: str, human_goals: bool = True, num_products: int | None = None,
                 max_steps: int = 15, step_timeout_s: float | None = 30.0):
        super().__init__(max_steps=max_steps, step_timeout_s=step_timeout_s)
        self.products, self.goals = load_catalog(data_dir, human_goals=human_goals, num_products=num_products)
        if not self.goals:
            raise EnvError(f"no WebShop goals in {data_dir} (human_goals={human_goals})")
        self._engine = _BM25({a: " ".join([p["Title"], " ".join(p["BulletPoints"]), p["Description"],
                                           p["product_category"], " ".join(sum(p["options"].values(), []))])
                              for a, p in self.products.items()})
        self.goal: dict[str, Any] = {}
        self._page: dict[str, Any] = {}
        self.system_prompt = ("You are shopping on WebShop. Find and buy the product that matches the "
                              "instruction. Actions: search[keywords] on the search page, click[button] "
                              "for a button, product id or option shown on the page.")

    # ---- pages -------------------------------------------------------------------------
    def _render(self) -> tuple[str, dict[str, str]]:
        pg, instr = self._page, self.goal["instruction_text"]
        head = [f"Instruction: {instr}"]
        clicks: dict[str, str] = {}
        kind = pg["kind"]
        if kind == "search":
            return " [SEP] ".join(["WebShop", *head, "Search"]), clicks
        head.append(f"Current Query: {pg['keywords']}")
        if kind == "results":
            hits, page = pg["hits"], pg["page"]
            parts = [*head, "Results", f"Page {page} ({(page - 1) * 10 + 1}-{page * 10}) of {len(hits)} total results",
                     "Back to Search"]
            clicks["back to search"] = "back"
            if page > 1:
                parts.append("< Prev")
                clicks["< prev"] = "prev"
            if page * PRODUCT_WINDOW < len(hits):
                parts.append("Next >")
                clicks["next >"] = "next"
            for asin in hits[(page - 1) * PRODUCT_WINDOW: page * PRODUCT_WINDOW]:
                p = self.products[asin]
                parts += [asin, p["Title"], p["Price"]]
                clicks[asin.lower()] = f"item:{asin}"
            return " [SEP] ".join(parts), clicks
        p = self.products[pg["asin"]]
        clicks["back to search"] = "back"
        if kind == "item":
            parts = [*head, "Back to Search", "< Back to Results"]
            clicks["< back to results"] = "results"
            for name, values in p["options"].items():
                parts.append(name)
                for v in values:
                    parts.append(v)
                    clicks[v] = f"option:{name}"
            parts += [p["Title"], f"Price: {p['Price']}", f"Rating: {p['Rating']}", "Description", "Features",
                      "Reviews", "Buy Now"]
            clicks.update({s: f"sub:{s}" for s in SUB_PAGES})
            clicks["buy now"] = "buy"
            return " [SEP] ".join(parts), clicks
        body = {"description": [p["Description"]], "features": p["BulletPoints"], "reviews": p["Reviews"]}[pg["sub"]]
        clicks["< prev"] = "item"
        return " [SEP] ".join([*head, "Back to Search", "< Prev", *body]), clicks

    def _outcome(self, *, invalid: bool = False, reward: float = 0.0, done: bool = False,
                 info: dict[str, Any] | None = None) -> Outcome:
        text, clicks = self._render()
        self._clicks = clicks
        admissible = tuple(f"click[{c}]" for c in clicks) or None
        return Outcome(text, reward=reward, terminated=done, invalid=invalid, admissible=admissible,
                       info={"page": self._page["kind"], "has_search_bar": self._page["kind"] == "search", **(info or {})})

    def _start(self, seed: int) -> Outcome:
        if seed >= len(self.goals):
            raise EnvError(f"WebShop has {len(self.goals)} goals here; seed {seed} is out of range")
        self.goal = self.goals[seed]
        self._page = {"kind": "search", "keywords": ""}
        return self._outcome()

    def _act(self, action: str) -> Outcome:
        m = re.fullmatch(r"\s*(search|click)\[(.+)\]\s*", action, re.DOTALL)
        name, arg = (m.group(1), m.group(2).strip().lower()) if m else ("", "")
        pg = self._page
        if name == "search" and arg and pg["kind"] == "search":
            self._page = {"kind": "results", "keywords": arg, "page": 1, "hits": self._engine.search(arg, SEARCH_RETURN_N)}
            return self._outcome()
        target = self._clicks.get(arg) if name == "click" else None
        if target is None:
            return self._outcome(invalid=True)  # WebShop: an invalid action changes nothing
        if target == "back":
            self._page = {"kind": "search", "keywords": ""}
        elif target in ("next", "prev"):
            self._page = {**pg, "page": pg["page"] + (1 if target == "next" else -1)}
        elif target.startswith("item:"):
            self._page = {"kind": "item", "asin": target[5:], "options": {}, "keywords": pg["keywords"], "results": pg}
        elif target == "results":
            self._page = pg["results"]
        elif target.startswith("option:"):
            self._page = {**pg, "options": {**pg["options"], target[7:]: arg}}
        elif target.startswith("sub:"):
            self._page = {**pg, "kind": "sub", "sub": target[4:], "item": pg}
        elif target == "item":
            self._page = pg["item"]
        else:  # buy
            product = self.products[pg["asin"]]
            reward, details = get_reward(product, self.goal, product["price"], pg["options"])
            self._page = {**pg, "kind": "done"}
            text = f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {reward}"
            return Outcome(text, reward=reward, terminated=True,
                           info={"page": "done", "asin": pg["asin"], "options": dict(pg["options"]), **details})
        return self._outcome()

    # ---- branching and gold ------------------------------------------------------------
    def snapshot(self) -> Any:
        return (copy.deepcopy(self._page), self.goal, dict(getattr(self, "_clicks", {})), self._bookkeeping())

    def restore(self, snapshot: Any) -> None:
        page, goal, clicks, book = snapshot
        self._page, self.goal, self._clicks = copy.deepcopy(page), goal, dict(clicks)
        self._restore_bookkeeping(book)

    def gold_actions(self) -> Sequence[str] | None:
        """Search the goal's query (its title if that misses), open the product, choose the goal options, buy."""
        if not self.goal:
            return None
        asin, product = self.goal["asin"], self.products[self.goal["asin"]]
        actions = []
        for query in (self.goal["query"], product["Title"]):
            hits = self._engine.search(query, SEARCH_RETURN_N)
            if asin in hits:
                actions.append(f"search[{query}]")
                actions += ["click[next >]"] * (hits.index(asin) // PRODUCT_WINDOW)
                break
        else:
            return None
        actions.append(f"click[{asin.lower()}]")
        wanted = [o.lower() for o in self.goal["goal_options"]]
        for values in product["options"].values():
            pick = next((v for v in values if v in wanted), None)
            if pick is not None:
                actions.append(f"click[{pick}]")
        return [*actions, "click[buy now]"]


def webshop_tasks(*, split: str = "test", data_dir: str, n: int | None = None, **env_kwargs: Any) -> Iterator[Task]:
    """WebShop's goal-index convention: test 0-499, valid (dev) 500-1499, train 1500+."""
    ranges = {"test": (0, 500), "valid": (500, 1500), "train": (1500, 10**9)}
    if split not in ranges:
        raise ConfigError(f"unknown split {split!r}; choose one of: test, train, valid")
    _, goals = load_catalog(data_dir, human_goals=env_kwargs.get("human_goals", True),
                            num_products=env_kwargs.get("num_products"))
    lo, hi = ranges[split]
    seeds = range(lo, min(hi, len(goals)))
    for seed in list(seeds)[: n if n is not None else None]:
        yield Task(env="webshop", id=f"webshop/goal{seed}", seed=seed, kwargs={"data_dir": str(data_dir), **env_kwargs},
                   split=split)
