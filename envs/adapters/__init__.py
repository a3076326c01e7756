"""Benchmark environment adapters, one module each, imported only when used.

The registry (:data:`ttsearch.envs.REGISTRY`) names them as ``"module:Class"`` strings, so a
missing optional dependency (``make benchmarks``) affects only its own adapter:
agentdojo, bfcl, tau2 (tool-calling: ``tool_env.py`` + ``tool_calls.py``), textworld,
textworld_express, scienceworld, alfworld, minigrid, sokoban, reasoning_gym, textcraft,
webshop. ``base.py`` holds what the text-game adapters share.
"""
