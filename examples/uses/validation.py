"""Validation: a record passes through a chain of checks; the first failure rejects it.

A booking request for a village hall goes through four checks in order. The first
is pure JSON Logic: ``receive`` normalises the request and its branch halts when
the ``missing`` operator finds required fields absent. The other checks are
executor functions that answer ``{"passed": ..., "reason": ...}`` and share one
branch (a YAML anchor) that halts with a rejection naming the check and the reason.
A request that passes every check is confirmed with a reference and a price.

Run from the repository root:  python examples/uses/validation.py
"""

from __future__ import annotations

import json
import re
from typing import Any

import runfox as rfx

SPEC = """
name: hall-booking
steps:
  - id: receive
    fn: normalise
    input:
      request: {"var": "input"}
    branch:
      - condition: {"missing": ["organiser", "email", "date", "hours", "guests"]}
        action: halt
        result:
          accepted: false
          rejected_by: receive
          reason:
            cat: ["missing fields: ",
                  {"missing": ["organiser", "email", "date", "hours", "guests"]}]

  - id: check_email
    fn: check_email
    depends_on: [receive]
    input: {email: {"var": "state.email"}}
    branch: &reject
      - condition: {"!": {"var": "passed"}}
        action: halt
        result:
          accepted: false
          rejected_by: {"var": "check"}
          reason: {"var": "reason"}

  - id: check_date
    fn: check_date
    depends_on: [check_email]
    input: {date: {"var": "state.date"}}
    branch: *reject

  - id: check_size
    fn: check_size
    depends_on: [check_date]
    input:
      guests: {"var": "state.guests"}
      hours: {"var": "state.hours"}
    branch: *reject

  - id: confirm
    fn: confirm
    depends_on: [check_size]
    input:
      organiser: {"var": "state.organiser"}
      date: {"var": "state.date"}
      hours: {"var": "state.hours"}

outputs:
  accepted: true
  reference: {"var": "steps.confirm.output.reference"}
  price_eur: {"var": "steps.confirm.output.price_eur"}
"""

CLOSED_DAYS = {"2026-03-14": "the hall is closed for its annual inspection"}
MAX_GUESTS = 80


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "normalise":
        raw = inputs["request"]
        clean = {k: v.strip() if isinstance(v, str) else v for k, v in raw.items()}
        if "email" in clean:
            clean["email"] = clean["email"].lower()
        return clean
    if fn == "check_email":
        ok = re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", inputs["email"]) is not None
        return {"check": "check_email", "passed": ok,
                "reason": "" if ok else f"{inputs['email']!r} is not an email address"}
    if fn == "check_date":
        date = inputs["date"]
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
            return {"check": "check_date", "passed": False,
                    "reason": f"{date!r} is not a YYYY-MM-DD date"}
        closed = CLOSED_DAYS.get(date)
        return {"check": "check_date", "passed": closed is None,
                "reason": f"{date}: {closed}" if closed else ""}
    if fn == "check_size":
        guests, hours = inputs["guests"], inputs["hours"]
        if guests > MAX_GUESTS:
            reason = f"{guests} guests is over the hall's limit of {MAX_GUESTS}"
        elif not 1 <= hours <= 6:
            reason = f"bookings run 1 to 6 hours, not {hours}"
        else:
            reason = ""
        return {"check": "check_size", "passed": not reason, "reason": reason}
    if fn == "confirm":
        initials = "".join(part[0] for part in inputs["organiser"].split()).upper()
        return {"reference": f"HALL-{inputs['date'].replace('-', '')}-{initials}",
                "price_eur": 18 * inputs["hours"]}
    raise ValueError(f"unknown fn {fn!r}")


REQUESTS = [
    {"organiser": "Maren Okafor", "email": " Maren.Okafor@example.org ",
     "date": "2026-05-09", "hours": 4, "guests": 45},
    {"organiser": "Tobias Lind", "email": "tobias@example.org",
     "date": "2026-06-20", "hours": 3, "guests": 120},
    {"organiser": "Ines Varga", "email": "ines.varga@example.org",
     "date": "2026-03-14", "hours": 2, "guests": 30},
    {"organiser": "Pip Harrow", "date": "2026-07-01"},
]


def main() -> None:
    backend = rfx.Backend(executor=execute)
    for request in REQUESTS:
        wf = rfx.Workflow.from_yaml(SPEC, backend, inputs=request)
        result = wf.run()
        ran = [sid for sid, status in wf.step_statuses.items() if status.value != "skipped"]
        verdict = "ACCEPTED" if isinstance(result, rfx.Complete) else "REJECTED"
        print(f"{request['organiser']}: {verdict} ({type(result).__name__}) after {ran}")
        print(f"  outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
