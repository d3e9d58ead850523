"""A tiny main(cfg) for the launcher tests: counts to cfg.steps, one step per tick, with its
progress in a state file so that a requeued job continues where it stopped."""
import json
import time
from pathlib import Path


def main(cfg):
    out = Path(cfg.out)
    state = json.loads(out.read_text()) if out.exists() else {"done": 0, "starts": 0}
    state["starts"] += 1
    out.write_text(json.dumps(state))
    while state["done"] < cfg.steps:
        time.sleep(cfg.tick)
        state["done"] += 1
        out.write_text(json.dumps(state))
    return state
