"""How a model used the tools in a ``ttsearch run`` on a tool-calling benchmark (AgentDojo, BFCL,
τ²-bench): per arm, the executed turns' tool calls, parse errors, turns, context and reward.

    python -m ttsearch.benchmarks.report.tool_use runs/smollm2-bfcl [--tokenizer PATH]
    rows = tool_use_table(run_dir, tokenizer)       # one dict per arm (keys: see COLUMNS)

Each executed message is classified as the env reads it (``parse_turn``): a tool call (one or
more readable calls), a parse error (a call attempt that cannot be read) or plain text (a final
answer / a message to the user). ``context`` is the prompt of each turn in tokens: the recorded
system prompt (``run.json``) and every earlier message through the tokenizer's chat template, i.e.
the full history re-tokenised before any fitting to the model's context; ``over`` counts turns
whose prompt + ``max_new_tokens`` exceeded ``max_positions`` (the agent fitted those,
``agents/prompting.py``). The tokenizer defaults to the run's pair's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttsearch.benchmarks.run.store import latest_rows, read_rows
from ttsearch.envs.adapters.tool_calls import parse_turn
from ttsearch.envs.errors import ConfigError, ParseError

COLUMNS = ("arm", "episodes", "turns", "call_rate", "parse_error_rate", "text_rate", "context_mean",
           "context_max", "over", "reward", "success")


def classify(text: str) -> str:
    """``"call"``, ``"error"`` or ``"text"``: what the tool-calling env makes of the message."""
    try:
        return "call" if parse_turn(text).tool_calls else "text"
    except ParseError:
        return "error"


def turn_contexts(row: dict[str, Any], system: str, tokenizer: Any) -> list[int]:
    """The prompt length in tokens before each executed turn of ``row`` (full history)."""
    messages = [{"role": "system", "content": system}] if system else []
    out = []
    for step in row["trajectory"]["steps"]:
        messages.append({"role": "user", "content": step["observation"]})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        out.append(len(ids["input_ids"] if hasattr(ids, "keys") else ids))
        messages.append({"role": "assistant", "content": step["action_text"]})
    return out


def tool_use_table(run_dir: str | Path, tokenizer: Any, *, max_positions: int | None = None) -> list[dict[str, Any]]:
    """One dict per arm (``COLUMNS``) over the run's test episodes (error rows left out)."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "run.json").read_text())
    system = (manifest.get("prompt") or {}).get("system_prompt")
    if system is None:
        raise ConfigError(f"{run_dir}/run.json records no system prompt (a run from before issue 16); rerun it")
    room = None if max_positions is None else max_positions - manifest["config"]["sampling"]["max_new_tokens"]
    rows = [r for r in latest_rows(read_rows(run_dir / "episodes.jsonl"))
            if r["error"] is None and r["task"].get("role", "test") == "test"]
    table = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        kinds = [classify(s["action_text"]) for r in mine for s in r["trajectory"]["steps"]]
        contexts = [c for r in mine for c in turn_contexts(r, system, tokenizer)]
        n = max(len(kinds), 1)
        table.append({
            "arm": arm, "episodes": len(mine), "turns": statistics.fmean(r["n_steps"] for r in mine),
            "call_rate": kinds.count("call") / n, "parse_error_rate": kinds.count("error") / n,
            "text_rate": kinds.count("text") / n,
            "context_mean": statistics.fmean(contexts) if contexts else 0.0, "context_max": max(contexts, default=0),
            "over": None if room is None else sum(c > room for c in contexts),
            "reward": statistics.fmean(r["reward"] for r in mine), "success": statistics.fmean(r["success"] for r in mine)})
    return table


def markdown(table: Sequence[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in table]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the run's pair's policy)")
    args = parser.parse_args(argv)
    # transformers is heavy and only this command needs it
    from transformers import AutoConfig, AutoTokenizer

    folder = args.tokenizer or _pair_tokenizer(Path(args.run_dir))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    positions = getattr(AutoConfig.from_pretrained(folder), "max_position_embeddings", None)
    print(markdown(tool_use_table(args.run_dir, tokenizer, max_positions=positions)))


def _pair_tokenizer(run_dir: Path) -> str:
    # the pair machinery is only needed to find the default tokenizer
    from ttsearch.agents.checkpoints.model_pair import PairManifest

    pair_dir = Path(json.loads((run_dir / "run.json").read_text())["pair"])
    return str(PairManifest.read(pair_dir).reference_dir(pair_dir))


if __name__ == "__main__":
    main()
