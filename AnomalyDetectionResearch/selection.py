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
4. **A lead within its own noise is a tie, and a tie goes to the faster option** (the
   one-standard-error rule of model selection): a candidate whose mean AUPRC is below the best's
   by no more than the standard error of their paired per-type differences counts as measuring
   the same, and of those the one with the fewest seconds per case wins. Why: the validation set
   has a couple of cases per lesion type, so a small lead is noise, while a score that takes six
   times as long on a laptop CPU is a certain cost to every user.

Where no candidate passes 1 and 2, those passing 1 come first, then the others by their worst
false-positive rate; the choice says which rule it could not keep. The intensity rule is the
yardstick, never a candidate.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "FP_TOLERANCE", "choose_default", "finite", "format_choice", "paired_lead", "rank_candidates", "report_from_folder",
    "worst_fp_rate",
]

#: How far above the calibrated false-positive rate a person's worst normal case may go.
FP_TOLERANCE = 2.0

#: The score that is the yardstick, not a candidate.
YARDSTICK = "intensity"


def rank_candidates(report: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Every calibrated (model, score) of ``report`` but the yardstick, best first by the rule above,
    each with the numbers the rule used (``worst_fp_rate``, ``fp_ok``, ``type_auprc``,
    ``beats_yardstick``, ``voxel_auroc``, ``seconds`` per case, ``per_type`` AUPRC)."""
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
            "seconds": row.get("seconds") if finite(row.get("seconds")) else None,
            "per_type": _per_type_auprc(report, key),
        })
    return sorted(candidates, key=_order)


def choose_default(report: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The rule's choice from :func:`rank_candidates`, with the rule and the bound it applied; None
    without candidates.

    ``met_fp_bound`` is False when no candidate kept every person within the bound: then the one
    with the lowest worst case is chosen, and the README must say that the bound was missed.
    ``best_by_auprc`` is the first of the ranking; ``tied`` the candidates of its group whose lead
    it does not clear (rule 4), of which the fastest is the choice.
    """
    ranked = rank_candidates(report)
    if not ranked:
        return None
    best = ranked[0]
    leads = [paired_lead(best["per_type"], c["per_type"]) for c in ranked]
    tied = [c for c, lead in zip(ranked, leads) if _group(c) == _group(best) and (
        c is best or (lead is not None and lead[0] <= lead[1]))]
    chosen = min(tied, key=lambda c: (c["seconds"] if c["seconds"] is not None else math.inf, ranked.index(c)))
    target = report.get("target_fp_rate")
    tied_keys = {(c["model"], c["score"]) for c in tied}
    return {**{k: v for k, v in chosen.items() if k != "per_type"},
            "met_fp_bound": chosen["fp_ok"], "met_yardstick": chosen["beats_yardstick"],
            "fp_bound": FP_TOLERANCE * target if target is not None else None,
            "best_by_auprc": {"model": best["model"], "score": best["score"]},
            "tied": [{"model": c["model"], "score": c["score"]} for c in tied],
            "rule": f"worst person's FP rate <= {FP_TOLERANCE:g} x the calibrated rate and mean AUPRC over "
                    "lesion types above the intensity rule's, then the highest mean AUPRC over lesion types "
                    "(ties: voxel AUROC); a lead within one standard error of the paired per-type differences "
                    "is a tie, won by the fewest seconds per case",
            "ranking": [{**{k: c[k] for k in ("model", "score", "fp_ok", "beats_yardstick", "worst_fp_rate",
                                              "type_auprc", "seconds")},
                         "lead_of_best": lead, "tied": (c["model"], c["score"]) in tied_keys}
                        for c, lead in zip(ranked, leads)]}


def paired_lead(best: Mapping[str, float], other: Mapping[str, float]) -> Optional[Tuple[float, float]]:
    """``(mean, standard error)`` of ``best - other`` over the lesion types both have; None with
    fewer than two such types (no spread to judge a lead by)."""
    kinds = [k for k in best if k in other]
    if len(kinds) < 2:
        return None
    differences = [best[k] - other[k] for k in kinds]
    mean = sum(differences) / len(differences)
    variance = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    return mean, math.sqrt(variance / len(differences))


def format_choice(choice: Mapping[str, Any]) -> List[str]:
    """Markdown lines for the report's table: the chosen default and the ranking behind it."""
    lines = [f"Default chosen on this set: **{choice['model']}, {choice['score']}** (rule: {choice['rule']})."]
    best = choice.get("best_by_auprc")
    if best and (best["model"], best["score"]) != (choice["model"], choice["score"]):
        lines.append(f"The highest mean AUPRC is {best['model']}, {best['score']}'s, but its lead over the choice is "
                     "within one standard error: a tie, won by the faster.")
    if not choice["met_fp_bound"]:
        lines.append("No candidate kept every person within the bound: the lowest worst case was chosen.")
    elif not choice["met_yardstick"]:
        lines.append("No candidate within the bound beat the intensity rule: the best of those within it was chosen.")
    lines += ["", "| rank | model | score | worst person FP % | within bound | beats intensity "
                  "| mean AUPRC over types | best's lead (SE) | tied with the best | s/case |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for rank, c in enumerate(choice["ranking"], 1):
        worst = "n/a" if c["worst_fp_rate"] is None else f"{100 * c['worst_fp_rate']:.2f}"
        auprc = "n/a" if c["type_auprc"] is None else f"{c['type_auprc']:.3f}"
        lead = c.get("lead_of_best")
        lead_text = "n/a" if lead is None else f"{lead[0]:+.3f} ({lead[1]:.3f})"
        seconds = "n/a" if c.get("seconds") is None else f"{c['seconds']:.1f}"
        lines.append(f"| {rank} | {c['model']} | {c['score']} | {worst} | {'yes' if c['fp_ok'] else 'no'} | "
                     f"{'yes' if c['beats_yardstick'] else 'no'} | {auprc} | {lead_text} | "
                     f"{'yes' if c.get('tied') else 'no'} | {seconds} |")
    return lines


def report_from_folder(folder: Union[str, Path], target_fp_rate: float) -> Dict[str, Any]:
    """The parts of a benchmark report the rule reads, from a written report's CSV files
    (``benchmark.csv``, ``benchmark_by_type.csv``, ``benchmark_by_anatomy.csv``), so a choice can
    be rerun from a committed report without rerunning the benchmark."""
    folder = Path(folder)
    return {"target_fp_rate": target_fp_rate,
            "summary": _read_rows(folder / "benchmark.csv"),
            "by_type": _read_rows(folder / "benchmark_by_type.csv"),
            "by_anatomy": _read_rows(folder / "benchmark_by_anatomy.csv")}


def _read_rows(path: Path) -> List[Dict[str, Any]]:
    with open(path, newline="") as handle:
        return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _cell(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return None if text == "" else text


def _group(candidate: Mapping[str, Any]) -> Tuple[Any, ...]:
    return _order(candidate)[:1]


def _order(candidate: Mapping[str, Any]) -> Tuple[Any, ...]:
    quality = (-(candidate["type_auprc"] or 0.0), -(candidate["voxel_auroc"] or 0.0))
    if candidate["fp_ok"]:
        return (0 if candidate["beats_yardstick"] else 1, *quality)
    worst = candidate["worst_fp_rate"]
    return (2, worst if worst is not None else math.inf, *quality)


def _type_auprc(report: Mapping[str, Any], key: Tuple[str, str]) -> Optional[float]:
    """Mean voxel AUPRC over the lesion types of ``key`` (each type weighs the same)."""
    values = list(_per_type_auprc(report, key).values())
    return sum(values) / len(values) if values else None


def _per_type_auprc(report: Mapping[str, Any], key: Tuple[str, str]) -> Dict[str, float]:
    return {r["lesion_type"]: r["voxel_auprc"] for r in report.get("by_type", [])
            if (r["model"], r["score"]) == key and finite(r.get("voxel_auprc"))}


def worst_fp_rate(by_anatomy: Any, key: Tuple[str, str]) -> Optional[float]:
    """The worst normal case of any person (``summarise_by_anatomy`` rows) for ``(model, score)``."""
    values = [r["fp_rate_max"] for r in by_anatomy if (r["model"], r["score"]) == key and finite(r.get("fp_rate_max"))]
    return max(values) if values else None


def finite(value: Any) -> bool:
    """A number that is neither None nor NaN/inf (undefined metrics are None or NaN in reports)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def main(argv: Sequence[str]) -> int:
    """``python -m AnomalyDetectionResearch.selection reports/validation``: the rule's choice, in Markdown."""
    parser = argparse.ArgumentParser(description="The shipped default by the written rule, from a validation report")
    parser.add_argument("folder", type=Path, help="a benchmark report folder (benchmark --validation --output-dir)")
    parser.add_argument("--target-fp-rate", type=float, default=0.005,
                        help="the calibrated false-positive rate (the bundled models': 0.005)")
    args = parser.parse_args(argv)
    choice = choose_default(report_from_folder(args.folder, args.target_fp_rate))
    if choice is None:
        print("no calibrated candidate in the report", file=sys.stderr)
        return 1
    print("\n".join(format_choice(choice)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
