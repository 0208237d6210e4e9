#!/usr/bin/env bash
# Soak: start the server on 127.0.0.1, load it with simulated people and bots,
# sample every server process each second, check every protocol rule, stop it.
# Usage: scripts/soak.sh [--workers N] [--clients C] [--duration S] [--seed X] [--bots F]
#                        [--chaos] (kill and stop the server's children; --help lists all)
#                        [--hosts N] (N servers sharing a redis-server the soak starts)
# Exits non-zero on a rule violation, a descriptor leak, a crash or an unclean stop.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python
command -v "$python" >/dev/null || python=python3
exec "$python" -m scripts.soak "$@"
