"""WebShop adapter on a tiny catalogue we wrote in WebShop's data format (tests/data/webshop)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rapidfuzz")

from ttsearch.envs import EnvError, list_tasks, make  # noqa: E402
from ttsearch.envs.adapters.webshop import WebShopEnv, load_catalog  # noqa: E402
from ttsearch.envs.check_env import check_env  # noqa: E402
from ttsearch.envs.testing import play

from tolerances import EXACT

DATA = str(Path(__file__).parent / "data" / "webshop")



def goal_index(env, asin):
    return next(i for i, g in enumerate(env.goals) if g["asin"] == asin)


def test_catalogue_follows_webshops_loading_rules():
    products, goals = load_catalog(DATA)
    shoes = products["B000SHOE01"]
    assert shoes["options"] == {"color": ["black", "blue | grey"], "size": ["9", "10", "11"]}  # '/' -> ' | '
    assert products["B000SHOE02"]["Price"] == "$29.99 to $39.99" and 29.99 <= products["B000SHOE02"]["price"] <= 39.99
    assert len(goals) == 3 and {g["asin"] for g in goals} == {"B000SHOE01", "B000TEA003", "B000LAMP04"}
    lamp = next(g for g in goals if g["asin"] == "B000LAMP04")
    # price_upper: one of the two larger of the 4 price steps above the price (25.00 -> 30, 40, 50, 60)
    assert lamp["price_upper"] in (40.0, 50.0, 60.0)
    assert lamp["instruction_text"].endswith(f", and price lower than {lamp['price_upper']:.2f} dollars")
    assert load_catalog(DATA)[1] == goals  # deterministic


def test_gold_paths_buy_the_right_item_for_reward_1():
    env = WebShopEnv(data_dir=DATA)
    for seed in range(len(env.goals)):
        obs = env.reset(seed=seed)
        assert obs.text == f"WebShop [SEP] Instruction: {env.goals[seed]['instruction_text']} [SEP] Search"
        results = play(env, env.gold_actions())
        assert results[-1].terminated and results[-1].reward == 1.0
        assert not any(r.info["invalid_action"] for r in results)


def test_a_wrong_option_costs_exactly_its_share_of_the_reward():
    env = WebShopEnv(data_dir=DATA)
    env.reset(seed=goal_index(env, "B000LAMP04"))
    results = play(env, ["search[desk lamp]", "click[b000lamp04]", "click[black]", "click[buy now]"])
    # goal: 2 attributes (both in the product), option "silver" (bought black), price ok, same query:
    # (2 + 0 + 1) / (2 + 1 + 1) * r_type 1
    assert results[-1].reward == pytest.approx(0.75, abs=EXACT) and results[-1].info["option_matches"] == 0
    env.reset(seed=goal_index(env, "B000SHOE01"))
    results = play(env, ["search[green tea]", "click[b000tea003]", "click[buy now]"])  # wrong product type
    assert results[-1].reward < 0.5 and results[-1].info["r_type"] < 1


def test_pages_buttons_and_invalid_actions():
    env = WebShopEnv(data_dir=DATA)
    env.reset(seed=0)
    r = env.step("click[buy now]")  # no such button on the search page
    assert r.info["invalid_action"] and r.observation.text.endswith("[SEP] Search")
    r = env.step("search[shoes]")
    assert "Page 1 (1-10) of 2 total results" in r.observation.text and "click[b000shoe01]" in r.observation.admissible_actions
    assert env.step("search[lamp]").info["invalid_action"]  # only the search page has the search bar
    snap = env.snapshot()
    item = env.step("click[b000shoe02]")
    assert "Price: $29.99 to $39.99" in item.observation.text
    assert env.step("click[description]").observation.text.endswith("Comfortable walking shoes with memory foam insole.")
    assert "< Back to Results" in env.step("click[< prev]").observation.text
    env.restore(snap)
    assert env.step("click[b000shoe02]").observation.text == item.observation.text
    assert env.step("click[back to search]").observation.text.endswith("[SEP] Search")


def test_conformance_and_missing_data():
    report = check_env(lambda: make("webshop", data_dir=DATA), seed=1)
    assert report.passed, report.failures()
    assert report.gold_success is True
    assert [t.id for t in list_tasks("webshop", data_dir=DATA)] == ["webshop/goal0", "webshop/goal1", "webshop/goal2"]
    with pytest.raises(EnvError, match="items_shuffle_1000.json"):
        WebShopEnv(data_dir=str(Path(DATA).parent))
