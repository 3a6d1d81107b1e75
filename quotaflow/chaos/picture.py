"""The chaos run as a picture: answers per second (202, 429) with the faults marked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from quotaflow.chaos.load import Outcome


def draw(outcomes: list[Outcome], faults: list[tuple[float, str]], path: Path) -> bool:
    """Write the PNG; False if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    accepted: Counter[int] = Counter()
    rejected: Counter[int] = Counter()
    for o in outcomes:
        second = int(o.answered_at_s)
        if o.kind == "accepted":
            accepted[second] += 1
        elif o.kind == "rejected":
            rejected[second] += 1
    end = max([*accepted, *rejected, 0]) + 1
    xs = list(range(end))
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=100)
    ax.plot(xs, [accepted[x] for x in xs], label="202 accepted", color="tab:green", lw=1)
    ax.plot(xs, [rejected[x] for x in xs], label="429 rejected", color="tab:orange", lw=1)
    top = max([*accepted.values(), *rejected.values(), 1])
    for i, (at_s, kind) in enumerate(faults):
        ax.axvline(at_s, color="tab:red", alpha=0.35, lw=1)
        ax.text(at_s, top * (1.02 - 0.07 * (i % 4)), kind, fontsize=7, color="tab:red")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("answers per second")
    ax.set_title("quotaflow chaos: answers per second while faults run (red)")
    ax.set_ylim(0, top * 1.1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
