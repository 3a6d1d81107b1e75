"""Re-executing the quota agent: every recorded decision must be the one ``decide`` gives.

One :class:`DecisionCheck` per partition folds that ``requests`` partition in log order with
the pure :func:`streams.quota.decide` / :func:`streams.quota.evolve` (exactly what the agent
runs, from an empty state) and matches what it decides against what the ``quota`` partition
holds, by event id (decisions have deterministic ids). The two streams may be fed in any
interleaving, so the audit reads them side by side and only the not-yet-matched decisions are
held in memory.

At the end:

* a recorded decision with no expected twin was not made by ``decide`` from this log (a forged
  or misplaced event): a discrepancy;
* an expected decision with no recorded twin is *missing* when the agent has recorded
  decisions of later inputs, and *pending* (the agent is behind, not wrong) otherwise;
* twins that differ in any field: a discrepancy naming the fields.
"""

from __future__ import annotations

import uuid
from typing import Any

from events import Event
from projections.audit.facts import Facts, Rejected, Stage, ref
from projections.audit.model import Discrepancy, EventRef, Findings
from streams.agents.quota import INPUTS
from streams.quota import QuotaState, decide, evolve

#: The event types the quota agent decides on (it ignores anything else on ``requests``).
INPUT_TYPES = frozenset(str(cls.model_fields["type"].default) for cls in INPUTS)


def _type(event: Event) -> str:
    return str(getattr(event, "type", type(event).__name__))


def _describe(event: Any) -> str:
    kind = _type(event)
    if kind == "TokensReserved":
        return f"TokensReserved({event.tokens} tokens)"
    if kind == "RequestRejected":
        return f"RequestRejected({event.reason})"
    if kind == "ReservationSettled":
        return f"ReservationSettled({event.prompt_tokens}+{event.completion_tokens} tokens)"
    return kind


def _stage(stage: Stage) -> str:
    what = ref(stage).type
    if isinstance(stage, Rejected):
        what += f"({stage.reason})"
    return f"{stage.stream}:{stage.offset} {what}"


class DecisionCheck:
    def __init__(self, requests_stream: str, quota_stream: str) -> None:
        self.requests_stream = requests_stream
        self.quota_stream = quota_stream
        self.state = QuotaState()
        #: expected, not yet recorded: id -> (offset of the input that caused it, the decision)
        self.expected: dict[uuid.UUID, tuple[int, Event]] = {}
        #: recorded, not (yet) expected: id -> (its offset, the decision)
        self.unmatched: dict[uuid.UUID, tuple[int, Event]] = {}
        self.decided_through = -1  # the last input offset whose decisions are recorded
        self.inputs = 0
        self.matched = 0
        self.differ: list[Discrepancy] = []

    def input(self, offset: int, event: Event) -> None:
        """An input of the agent, in log order (dead-lettered ones left out)."""
        self.inputs += 1
        state = self.state
        outs = decide(state, event)
        evolve(state, event)
        unmatched = self.unmatched
        for out in outs:
            evolve(state, out)
            found = unmatched.pop(out.event_id, None) if unmatched else None
            if found is None:
                self.expected[out.event_id] = (offset, out)
            else:
                self._match(offset, out, found[0], found[1])

    def recorded(self, offset: int, event: Event) -> None:
        """A decision of the ``quota`` partition, in log order (duplicates left out)."""
        expected = self.expected.pop(event.event_id, None)
        if expected is None:
            self.unmatched[event.event_id] = (offset, event)
        else:
            self._match(expected[0], expected[1], offset, event)

    def _match(self, cause: int, expected: Event, offset: int, found: Event) -> None:
        self.matched += 1
        if cause > self.decided_through:
            self.decided_through = cause
        if expected != found:
            want, got = expected.model_dump(), found.model_dump()
            fields = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            self.differ.append(
                Discrepancy(
                    check="decision",
                    tenant=found.tenant_id,
                    field=f"{_type(found)}." + ",".join(fields),
                    expected={k: want.get(k) for k in fields},
                    found={k: got.get(k) for k in fields},
                    events=(EventRef(self.quota_stream, offset, _type(found), found.event_id),),
                    detail=f"decide() gives {_describe(expected)}, "
                    f"the log holds {_describe(found)}",
                    at=found.occurred_at,
                )
            )

    def finish(self, facts: Facts, findings: Findings) -> int:
        """Report what did not match; returns how many expected decisions are pending."""
        findings.checked("decision", self.matched + len(self.unmatched))
        for d in self.differ:
            findings.add(d)
        for offset, event in sorted(self.unmatched.values(), key=lambda x: x[0]):
            findings.add(self._unexpected(offset, event, facts))
        pending = 0
        for cause, event in sorted(self.expected.values(), key=lambda x: x[0]):
            if cause > self.decided_through:
                pending += 1
                continue
            findings.checked("decision")
            findings.add(
                Discrepancy(
                    check="decision",
                    tenant=event.tenant_id,
                    field=f"{_type(event)} missing",
                    expected=_describe(event),
                    found=None,
                    events=(
                        EventRef(
                            self.requests_stream,
                            cause,
                            "cause",
                            event.causation_id or event.event_id,
                        ),
                    ),
                    detail=(
                        f"decide() gives {_describe(event)} (event id {event.event_id}) for "
                        f"{self.requests_stream}:{cause}; the agent recorded decisions of later "
                        "inputs but not this one"
                    ),
                    at=event.occurred_at,
                )
            )
        return pending

    def _unexpected(self, offset: int, event: Event, facts: Facts) -> Discrepancy:
        rid = getattr(event, "request_id", None)
        life = facts.lives.get(rid) if isinstance(rid, uuid.UUID) else None
        others = []
        if life is not None:
            stages: list[Stage] = [*life.reserved, *life.rejected, *life.settled, *life.closed]
            for stage in stages:
                if stage.event_id != event.event_id:
                    others.append(stage)
        context = (
            "; the log's other decisions for this request: " + ", ".join(_stage(s) for s in others)
            if others
            else ""
        )
        return Discrepancy(
            check="decision",
            tenant=event.tenant_id,
            field=f"{_type(event)} not decided",
            expected=None,
            found=_describe(event),
            events=(EventRef(self.quota_stream, offset, _type(event), event.event_id),),
            detail=(
                f"no input of {self.requests_stream} leads decide() to this decision "
                f"(request {rid}){context}"
            ),
            at=event.occurred_at,
        )
