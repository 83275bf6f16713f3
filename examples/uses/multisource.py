"""Multi-source: ask several sources in parallel, merge their answers, pick the best.

Four (simulated) carriers are asked for a quote to ship one parcel. They answer in
different shapes (cents or euros, days or hours), and one of them does not
answer at all: its executor call raises. That source's branch accepts a failed
attempt with the ``complete`` action, so one missing source does not sink the
workflow. ``merge`` collects every quote, and every failure message, with ``vars``
JSONPath reads over all steps and normalises the quotes; ``pick`` scores them and
chooses the best, which is not simply the cheapest.

Run from the repository root:  python examples/uses/multisource.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

CARRIERS = ["gannet_post", "pelican_freight", "swift_couriers", "tern_express"]

SPEC: dict[str, Any] = {
    "name": "parcel-quotes",
    "steps": [
        *[
            {
                "id": carrier,
                "fn": "ask_carrier",
                "input": {"carrier": carrier, "weight_kg": {"var": "input.weight_kg"}},
                # A source that fails still counts as answered: the merge copes.
                "branch": [{"condition": {"==": [{"var": "ok"}, False]},
                            "action": "complete"}],
            }
            for carrier in CARRIERS
        ],
        {
            "id": "merge",
            "fn": "merge_quotes",
            "depends_on": CARRIERS,
            "input": {
                "quotes": {"vars": "steps.*.output.quote"},
                "failures": {"vars": "steps.*.output.error"},
            },
        },
        {
            "id": "pick",
            "fn": "pick_best",
            "depends_on": ["merge"],
            "input": {"offers": {"var": "steps.merge.output.offers"}},
        },
    ],
    "outputs": {
        "asked": len(CARRIERS),
        "answered": {"var": "steps.merge.output.answered"},
        "unavailable": {"var": "steps.merge.output.unavailable"},
        "best": {"var": "steps.pick.output.best"},
        "ranking": {"var": "steps.pick.output.ranking"},
    },
}


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "ask_carrier":
        kg, carrier = inputs["weight_kg"], inputs["carrier"]
        if carrier == "gannet_post":
            quote = {"carrier": carrier, "price_cents": round(990 + 360 * kg),
                     "days": 3, "on_time": 0.97}
        elif carrier == "pelican_freight":
            quote = {"carrier": carrier, "price_eur": round(8.0 + 2.6 * kg, 2),
                     "hours": 96, "on_time": 0.88}
        elif carrier == "swift_couriers":
            quote = {"carrier": carrier, "price_cents": round(1700 + 300 * kg),
                     "days": 1, "on_time": 0.99}
        else:
            raise TimeoutError(f"{carrier} did not answer within 2 s")
        return {"quote": quote}
    if fn == "merge_quotes":
        offers = []
        for q in inputs["quotes"]:
            cents = q["price_cents"] if "price_cents" in q else round(q["price_eur"] * 100)
            days = q["days"] if "days" in q else -(-q["hours"] // 24)
            offers.append({"carrier": q["carrier"], "cents": cents, "days": days,
                           "on_time": q["on_time"]})
        return {"offers": offers, "answered": len(offers), "unavailable": inputs["failures"]}
    if fn == "pick_best":
        scored = [
            {**o, "score": round(100 * o["on_time"] - o["cents"] / 100 - 4 * o["days"], 2)}
            for o in inputs["offers"]
        ]
        scored.sort(key=lambda o: -o["score"])
        return {"best": scored[0]["carrier"],
                "ranking": [f"{o['carrier']}={o['score']}" for o in scored]}
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    backend = rfx.Backend(executor=execute)
    wf = rfx.Workflow.from_dict(SPEC, backend, inputs={"weight_kg": 2.5})
    result = wf.run()
    print("offers after merging:")
    for offer in wf.record.steps["merge"].output["offers"]:
        print(f"  {offer['carrier']:<16} {offer['cents'] / 100:>6.2f} EUR"
              f"  {offer['days']} day(s)  on time {offer['on_time']:.0%}")
    print(f"unavailable: {result.outcome['unavailable']}")
    print(f"best: {result.outcome['best']}")
    print(f"result: {type(result).__name__}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
