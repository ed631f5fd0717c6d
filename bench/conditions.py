"""Prints what a condition costs: parsing it once, then evaluating it on a run's document.

python -m bench.conditions [--evaluations 100000]
"""

from __future__ import annotations

import argparse
import time

from app.engine.conditions import compile_condition

CONDITIONS = [
    "{$.input.amount} > 100",
    '{$.input.status} == "PAID" && {$.input.amount} < 100',
    '{$.input.country} in ["FR", "BE", "NL"] && !({$.input.age} < 18)',
    "({$1.output.total} - {$1.output.discount}) * 1.2 >= 50",
]
DOCUMENT = {
    "input": {"amount": 80, "status": "PAID", "country": "BE", "age": 30},
    "1": {"output": {"total": 70, "discount": 5}},
    "flow": {"id": "bench", "name": "bench", "version": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evaluations", type=int, default=100_000)
    evaluations = parser.parse_args().evaluations
    print(f"{'condition':<70} {'parse µs':>9} {'evaluate µs':>12}")
    for text in CONDITIONS:
        started = time.perf_counter()
        condition = compile_condition.__wrapped__(text)  # uncached: the parse itself
        parsed = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(evaluations):
            condition.test(DOCUMENT)
        evaluated = (time.perf_counter() - started) / evaluations
        print(f"{text:<70} {parsed * 1e6:>9.1f} {evaluated * 1e6:>12.2f}")


if __name__ == "__main__":
    main()
