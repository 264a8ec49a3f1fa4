"""`python -m agent`: the same as `warden-agent` (agent/main.py)."""

from agent.main import main

main(prog="python -m agent")
