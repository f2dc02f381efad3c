"""Success rates with Wilson 95% intervals and per-task summaries of episode records."""
from __future__ import annotations

import math
from typing import Any, Iterable

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well behaved at 0, 1 and small n)."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval always contains p; clamp away rounding (at p = 0 the lower end is 1e-17).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rate_summary(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Episode records of one (task, agent) -> success rate, interval, length, latency, reasons."""
    recs = list(records)
    n = len(recs)
    wins = sum(1 for r in recs if r["success"])
    lat = [v for r in recs for v in r.get("latencies_ms", [])]
    reasons: dict[str, int] = {}
    for r in recs:
        if not r["success"] and r.get("reason"):
            key = str(r["reason"]).split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    lo, hi = wilson_interval(wins, n)
    return {
        "success_rate": wins / n if n else 0.0,
        "ci95": [lo, hi],
        "episodes": n,
        "successes": wins,
        "mean_steps": sum(r["steps"] for r in recs) / n if n else 0.0,
        "latency_ms": {"mean": sum(lat) / len(lat) if lat else None,
                       "p50": _percentile(lat, 0.5) if lat else None,
                       "p95": _percentile(lat, 0.95) if lat else None},
        "failure_reasons": reasons,
    }


def summarise(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """All episode records -> {env: {task: {success_rate, ci95, episodes, random_baseline,
    expert, ...}}}: the policy's numbers at the top level, baselines beside them."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        grouped.setdefault((r["env"], r["task"], r["agent"]), []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for env, task in sorted({(e, t) for e, t, _ in grouped}):
        per_agent = {a: rate_summary(v) for (e, t, a), v in grouped.items() if (e, t) == (env, task)}
        policy = per_agent.get("policy")
        entry: dict[str, Any] = dict(policy) if policy else {
            "success_rate": None, "ci95": None, "episodes": 0}
        entry["random_baseline"] = per_agent["random"]["success_rate"] if "random" in per_agent else None
        entry["expert"] = per_agent["expert"]["success_rate"] if "expert" in per_agent else None
        entry["agents"] = per_agent
        out.setdefault(env, {})[task] = entry
    return out
