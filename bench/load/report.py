"""Checks and figures of a load test: per-run completeness and order, isolation, latency per
offered load, and the chart."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

TERMINAL = {"agent_completed", "agent_failed", "agent_cancelled", "agent_timed_out"}


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else None


def verify(submissions: list[dict[str, Any]], frames: dict[str, list[tuple[float, dict[str, Any]]]],
           last_seq: dict[str, int] | None = None) -> dict[str, Any]:
    """Every accepted run: its owner's socket got seq 1..K exactly once, in order, ending with
    its terminal event (K = the server's last_seq when known); no socket got a frame of a run
    that is not its user's."""
    owner = {s["run_id"]: s["user"] for s in submissions if "run_id" in s}
    per_run: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    foreign = []
    for user, received in frames.items():
        for stamp, frame in received:
            run_id = frame.get("run_id")
            if run_id is None:
                continue  # ready, pong, ...
            if owner.get(run_id) != user:
                foreign.append({"socket_of": user, "run_id": run_id, "type": frame.get("type")})
                continue
            per_run[run_id].append((stamp, frame))
    problems: dict[str, str] = {}
    for run_id in owner:
        got = per_run.get(run_id, [])
        seqs = [f["seq"] for _, f in got]
        if not got:
            problems[run_id] = "no event received"
        elif seqs != list(range(1, len(seqs) + 1)):
            problems[run_id] = f"seqs {seqs[:12]} are not 1..N once each in order"
        elif got[-1][1]["type"] not in TERMINAL:
            problems[run_id] = f"no terminal event (last {got[-1][1]['type']})"
        elif any(f["type"] in TERMINAL for _, f in got[:-1]):
            problems[run_id] = "an event after the terminal one"
        elif last_seq is not None and last_seq.get(run_id) != len(seqs):
            problems[run_id] = f"received {len(seqs)} events, the log has {last_seq.get(run_id)}"
    return {"runs": len(owner), "complete_in_order": len(owner) - len(problems),
            "problems": problems, "foreign_frames": foreign, "per_run": per_run}


def step_figures(steps: list[dict[str, Any]], submissions: list[dict[str, Any]],
                 per_run: dict[str, list[tuple[float, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Latency percentiles and achieved rates for each offered load."""
    out = []
    for index, step in enumerate(steps):
        mine = [s for s in submissions if s["step"] == index]
        accepted = [s for s in mine if "run_id" in s]
        started, completed, accept, ends = [], [], [], []
        for s in accepted:
            events = per_run.get(s["run_id"], [])
            first = next((t for t, f in events if f["type"] == "agent_started"), None)
            last = next((t for t, f in events if f["type"] in TERMINAL), None)
            accept.append((s["accepted"] - s["sent"]) * 1000)
            if first is not None:
                started.append((first - s["sent"]) * 1000)
            if last is not None:
                completed.append((last - s["sent"]) * 1000)
                ends.append(last)
        sends = [s["sent"] for s in mine]
        span = (max(ends) - min(sends)) if ends and sends else 0.0
        out.append({
            "offered_per_s": step["rate"], "seconds": step["seconds"], "submitted": len(mine),
            "accepted": len(accepted), "rejected": len(mine) - len(accepted),
            "submitted_per_s": round(len(mine) / step["seconds"], 1),
            "completed_per_s": round(len(completed) / span, 1) if span else 0.0,
            "generator_late_p99_ms": round(percentile([s["late_ms"] for s in mine], 99) or 0, 1),
            **{f"{name}_ms": {f"p{q}": _round(percentile(values, q)) for q in (50, 95, 99)}
               for name, values in (("submit_to_202", accept), ("submit_to_started", started),
                                    ("submit_to_completed", completed))},
        })
    return out


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def chart(figures: list[dict[str, Any]], path: Path, title: str) -> None:
    """Latency percentiles (log scale) against offered load, completed/s on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [f["offered_per_s"] for f in figures]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for key, style, label in (("submit_to_completed_ms", "-", "submit → agent_completed"),
                              ("submit_to_started_ms", "--", "submit → agent_started")):
        for q, colour in (("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:red")):
            ax.plot(x, [f[key][q] for f in figures], style, marker="o", color=colour,
                    label=f"{q} {label}")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (runs submitted per second, all users)")
    ax.set_ylabel("latency on the owner's socket (ms, log)")
    ax.grid(True, which="both", alpha=0.3)
    twin = ax.twinx()
    twin.plot(x, [f["completed_per_s"] for f in figures], ":", marker="s", color="grey",
              label="completed/s")
    twin.set_ylabel("completed runs/s")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
