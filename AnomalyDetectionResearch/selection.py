"""Choosing the shipped default (model, score) from a validation report, by a rule written down.

Why a rule: the default must be the option that measures best on data no choice was tuned on
elsewhere, never the one kept for fidelity to a paper, and anyone must be able to rerun the choice.
The validation set (``benchmark --validation``) is built from templates disjoint from training,
calibration and both benchmarks, so the benchmark rows stay an honest test of what is chosen here.

The rule, in order:

1. **Calibration must hold for each person**: the worst normal case of any validation head may
   flag at most twice the calibrated false-positive rate (1 % at the 0.5 % setting). A map that
   flags 5 % of a normal brain cannot be trusted however well it ranks lesions.
2. **A learned map must beat the plain intensity rule**: its mean AUPRC over lesion types above
   the yardstick's on the same cases (a score at chance can keep false positives low).
3. Among those, the highest **mean AUPRC over lesion types** (each type weighs the same, since a
   user does not choose which anomaly their patient has), ties broken by mean voxel AUROC.

Where no candidate passes 1 and 2, those passing 1 come first, then the others by their worst
false-positive rate; the choice says which rule it could not keep. The intensity rule is the
yardstick, never a candidate.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["FP_TOLERANCE", "choose_default", "finite", "format_choice", "rank_candidates", "worst_fp_rate"]

#: How far above the calibrated false-positive rate a person's worst normal case may go.
FP_TOLERANCE = 2.0

#: The score that is the yardstick, not a candidate.
YARDSTICK = "intensity"


def rank_candidates(report: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Every calibrated (model, score) of ``report`` but the yardstick, best first by the rule above,
    each with the numbers the rule used (``worst_fp_rate``, ``fp_ok``, ``type_auprc``,
    ``beats_yardstick``, ``voxel_auroc``)."""
    target = report.get("target_fp_rate")
    bound = FP_TOLERANCE * target if target is not None else None
    yardsticks = {}
    for row in report.get("summary", []):
        if row["score"] == YARDSTICK:
            yardsticks[row["model"]] = _type_auprc(report, (row["model"], YARDSTICK))
    candidates = []
    for row in report.get("summary", []):
        key = (row["model"], row["score"])
        if row["score"] == YARDSTICK or not row.get("calibrated", False):
            continue
        worst = worst_fp_rate(report.get("by_anatomy", []), key)
        mine = _type_auprc(report, key)
        # The yardstick of the model's space runs under the first model of that space: any one found.
        yardstick = yardsticks.get(row["model"], next(iter(yardsticks.values()), None))
        candidates.append({
            "model": row["model"], "score": row["score"], "worst_fp_rate": worst,
            "fp_ok": bool(bound is not None and worst is not None and worst <= bound),
            "type_auprc": mine,
            "beats_yardstick": bool(mine is not None and yardstick is not None and mine > yardstick),
            "voxel_auroc": row.get("voxel_auroc") if finite(row.get("voxel_auroc")) else None,
        })
    return sorted(candidates, key=_order)


def choose_default(report: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The first of :func:`rank_candidates` with the rule and the bound it applied; None without candidates.

    ``met_fp_bound`` is False when no candidate kept every person within the bound: then the one
    with the lowest worst case is chosen, and the README must say that the bound was missed.
    """
    ranked = rank_candidates(report)
    if not ranked:
        return None
    target = report.get("target_fp_rate")
    return {**ranked[0], "met_fp_bound": ranked[0]["fp_ok"], "met_yardstick": ranked[0]["beats_yardstick"],
            "fp_bound": FP_TOLERANCE * target if target is not None else None,
            "rule": f"worst person's FP rate <= {FP_TOLERANCE:g} x the calibrated rate and mean AUPRC over "
                    "lesion types above the intensity rule's, then the highest mean AUPRC over lesion types "
                    "(ties: voxel AUROC)",
            "ranking": [{k: c[k] for k in ("model", "score", "fp_ok", "beats_yardstick", "worst_fp_rate",
                                           "type_auprc")} for c in ranked]}


def format_choice(choice: Mapping[str, Any]) -> List[str]:
    """Markdown lines for the report's table: the chosen default and the ranking behind it."""
    lines = [f"Default chosen on this set: **{choice['model']}, {choice['score']}** (rule: {choice['rule']})."]
    if not choice["met_fp_bound"]:
        lines.append("No candidate kept every person within the bound: the lowest worst case was chosen.")
    elif not choice["met_yardstick"]:
        lines.append("No candidate within the bound beat the intensity rule: the best of those within it was chosen.")
    lines += ["", "| rank | model | score | worst person FP % | within bound | beats intensity "
                  "| mean AUPRC over types |", "|---|---|---|---|---|---|---|"]
    for rank, c in enumerate(choice["ranking"], 1):
        worst = "n/a" if c["worst_fp_rate"] is None else f"{100 * c['worst_fp_rate']:.2f}"
        auprc = "n/a" if c["type_auprc"] is None else f"{c['type_auprc']:.3f}"
        lines.append(f"| {rank} | {c['model']} | {c['score']} | {worst} | {'yes' if c['fp_ok'] else 'no'} | "
                     f"{'yes' if c['beats_yardstick'] else 'no'} | {auprc} |")
    return lines


def _order(candidate: Mapping[str, Any]) -> Tuple[Any, ...]:
    quality = (-(candidate["type_auprc"] or 0.0), -(candidate["voxel_auroc"] or 0.0))
    if candidate["fp_ok"]:
        return (0 if candidate["beats_yardstick"] else 1, *quality)
    worst = candidate["worst_fp_rate"]
    return (2, worst if worst is not None else math.inf, *quality)


def _type_auprc(report: Mapping[str, Any], key: Tuple[str, str]) -> Optional[float]:
    """Mean voxel AUPRC over the lesion types of ``key`` (each type weighs the same)."""
    values = [r["voxel_auprc"] for r in report.get("by_type", [])
              if (r["model"], r["score"]) == key and finite(r.get("voxel_auprc"))]
    return sum(values) / len(values) if values else None


def worst_fp_rate(by_anatomy: Any, key: Tuple[str, str]) -> Optional[float]:
    """The worst normal case of any person (``summarise_by_anatomy`` rows) for ``(model, score)``."""
    values = [r["fp_rate_max"] for r in by_anatomy if (r["model"], r["score"]) == key and finite(r.get("fp_rate_max"))]
    return max(values) if values else None


def finite(value: Any) -> bool:
    """A number that is neither None nor NaN/inf (undefined metrics are None or NaN in reports)."""
    return isinstance(value, (int, float)) and math.isfinite(value)
