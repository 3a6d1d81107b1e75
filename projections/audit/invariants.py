"""Invariants of the log itself, checked on the folded facts (pure).

* every fact appears once (no event id twice);
* every reservation is settled, released, expired or still open: closed at most once, never
  closed without having been made, never made without its request, and a request is decided
  once (reserved or rejected, not both);
* tokens are conserved: a closing event carries the reservation's own tokens, a settlement
  charges at most what was reserved, and per tenant ``reserved = charged + returned +
  released + expired + open``;
* no request is billed twice (more than one settlement);
* no inference result (completion or failure) without a reservation.
"""

from __future__ import annotations

from collections.abc import Iterable

from projections.audit.facts import Closed, Facts, Life, Settled, Stage, ref
from projections.audit.facts import involved as refs_of
from projections.audit.model import Check, Discrepancy, Findings


def _flag(
    findings: Findings,
    check: Check,
    life: Life,
    what: str,
    expected: object,
    found: object,
    detail: str,
    involved: Iterable[Stage] | None = None,
) -> None:
    stages = list(involved) if involved is not None else life.stages()
    listed, more = refs_of(stages)
    at = min((s.at for s in stages), default=None)
    findings.add(
        Discrepancy(
            check=check,
            tenant=life.tenant,
            field=what,
            expected=expected,
            found=found,
            events=listed,
            more_events=more,
            detail=f"request {life.request_id}: {detail}",
            at=at,
        )
    )


#: Facts that may legitimately be appended twice with the same event id: a client's retry with
#: the same Idempotency-Key when the ingress died (or Redis lost the key's marker) between the
#: append and the marker (see ``streams/ingress/idempotency.py``). Every consumer takes the
#: first copy (the quota agent decides a request id once, the billing view keeps the first
#: request row), and the ``decision`` check re-executes exactly that, so they are counted as
#: redelivered, not reported.
REDELIVERABLE = frozenset({"InferenceRequested"})


def check_duplicates(facts: Facts, findings: Findings) -> None:
    findings.checked("duplicate", facts.events)
    for dup in facts.duplicates:
        if dup.first.type in REDELIVERABLE:
            facts.redelivered += 1
            continue
        note = {
            "InferenceCompleted": "; the quota agent ignores a repeated result and billing keeps "
            "the first one (the billing_view check shows whether it billed once)",
        }.get(dup.first.type, "")
        findings.add(
            Discrepancy(
                check="duplicate",
                tenant=dup.tenant,
                field=f"{dup.first.type} {dup.first.event_id}",
                expected="once",
                found="twice",
                events=(dup.first, dup.again),
                detail=f"{dup.again.stream}:{dup.again.offset} repeats "
                f"{dup.first.stream}:{dup.first.offset}{note}",
                at=dup.at,
            )
        )


def check_lives(facts: Facts, findings: Findings) -> None:
    for life in facts.lives.values():
        _reservation(life, findings)
        _conservation(life, findings)
        if life.settled:
            findings.checked("billed_twice")
            if len(life.settled) > 1:
                _flag(
                    findings,
                    "billed_twice",
                    life,
                    "settlements",
                    1,
                    len(life.settled),
                    "settled more than once",
                    life.settled,
                )
        results: list[Stage] = [*life.completed, *life.failed]
        if results:
            findings.checked("orphan_result")
            if not life.reserved:
                why = "rejected" if life.rejected else "never reserved"
                _flag(
                    findings,
                    "orphan_result",
                    life,
                    "reservation",
                    "a TokensReserved",
                    None,
                    f"an inference result for a request that was {why}",
                    [*results, *life.rejected],
                )


def _reservation(life: Life, findings: Findings) -> None:
    decisions: list[Stage] = [*life.reserved, *life.rejected]
    closings: list[Stage] = [*life.settled, *life.closed]
    if not decisions and not closings:
        return
    findings.checked("reservation")
    if len(decisions) > 1:
        _flag(
            findings,
            "reservation",
            life,
            "decisions",
            1,
            len(decisions),
            "decided more than once (" + ", ".join(ref(s).type for s in decisions) + ")",
            decisions,
        )
    if decisions and not life.requested:
        _flag(
            findings,
            "reservation",
            life,
            "request",
            "an InferenceRequested",
            None,
            "decided, but never requested",
            decisions,
        )
    if len(closings) > 1:
        _flag(
            findings,
            "reservation",
            life,
            "closings",
            1,
            len(closings),
            "closed more than once (" + ", ".join(ref(s).type for s in closings) + ")",
            closings,
        )
    if closings and not life.reserved:
        _flag(
            findings,
            "reservation",
            life,
            "reservation",
            "a TokensReserved",
            None,
            "closed without a reservation",
            closings,
        )


def _conservation(life: Life, findings: Findings) -> None:
    for s in life.settled:
        if s.prompt + s.completion > s.reserved:
            _flag(
                findings,
                "conservation",
                life,
                "charged",
                f"<= {s.reserved}",
                s.prompt + s.completion,
                "charged more than was reserved",
                [s],
            )
    if not life.reserved:
        return
    tokens = life.reserved[0].tokens
    closings: list[Settled | Closed] = [*life.settled, *life.closed]
    for closing in closings:
        findings.checked("conservation")
        if closing.reserved != tokens:
            _flag(
                findings,
                "conservation",
                life,
                f"{ref(closing).type}.reserved",
                tokens,
                closing.reserved,
                "the closing event does not carry the reservation's tokens",
                [life.reserved[0], closing],
            )


def check_conservation(tenant: str, figures: dict[str, int], findings: Findings) -> None:
    """``reserved = charged + returned + released + expired + open`` for one tenant."""
    findings.checked("conservation")
    total = sum(figures[k] for k in ("charged", "returned", "released", "expired", "open"))
    if figures["reserved"] != total:
        findings.add(
            Discrepancy(
                check="conservation",
                tenant=tenant,
                field="reserved tokens",
                expected=figures["reserved"],
                found=total,
                detail="charged + returned + released + expired + open != reserved",
            )
        )
