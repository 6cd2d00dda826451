"""A teaching report: Markdown text, tables and figures, written as Markdown, HTML and JSON.

Each experiment builds one :class:`ExperimentReport` while it runs and writes it at the end, so a
cancelled or failed run leaves no half-written report (files are written atomically, and the JSON
holds every number the tables show, for anyone who wants to plot them differently).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from AnomalyDetectionLib.atomic import atomic_output
from AnomalyDetectionLib.evaluation.against_truth import plain_json

PathLike = Union[str, "os.PathLike[str]"]

HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.45; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; }}
th {{ background: #eee; }} td {{ text-align: right; }} td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} code, pre {{ background: #f4f4f4; }}
</style></head><body>
{body}
</body></html>
"""


def format_cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded to ``digits``, undefined numbers as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None,
                   headers: Optional[Mapping[str, str]] = None, digits: int = 3) -> str:
    """``rows`` as a Markdown table with ``columns`` (default: the keys of the first row)."""
    if not rows:
        return "_(no rows)_"
    columns = list(columns or rows[0].keys())
    names = [(headers or {}).get(c, c) for c in columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines)


class ExperimentReport:
    """Sections of Markdown in order, plus the raw results, for one experiment run."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title
        self.parts: List[str] = [f"# {title}"]
        self.results: Dict[str, Any] = {"experiment": name, "title": title}
        self.figures: List[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append("#" * level + " " + text)

    def text(self, markdown_text: str) -> None:
        self.parts.append(markdown_text.strip())

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None,
              caption: str = "", headers: Optional[Mapping[str, str]] = None, digits: int = 3) -> None:
        if caption:
            self.parts.append(f"*{caption}*")
        self.parts.append(markdown_table(rows, columns, headers, digits))

    def figure(self, path: PathLike, caption: str) -> None:
        """A figure already written into the report's folder (referenced by its file name)."""
        name = Path(path).name
        self.figures.append(name)
        self.parts.append(f"![{caption}]({name})\n\n*{caption}*")

    def markdown(self) -> str:
        return "\n\n".join(self.parts) + "\n"

    def write(self, output_dir: PathLike) -> Dict[str, Path]:
        """``report.md``, ``report.html`` and ``results.json`` in ``output_dir``; returns their paths."""
        try:  # imported here: only the report writer needs it (Slicer's first-use install does not add it)
            import markdown
        except ImportError as exc:
            raise ImportError("writing experiment reports needs the 'markdown' package (pip install markdown)") from exc
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        text = self.markdown()
        html = HTML_PAGE.format(title=self.title, body=markdown.markdown(text, extensions=["tables"]))
        paths = {"markdown": folder / "report.md", "html": folder / "report.html", "json": folder / "results.json"}
        with atomic_output(paths["markdown"]) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        with atomic_output(paths["html"]) as tmp:
            Path(tmp).write_text(html, encoding="utf-8")
        with atomic_output(paths["json"]) as tmp:
            Path(tmp).write_text(json.dumps(plain_json(self.results), indent=2, allow_nan=False), encoding="utf-8")
        return paths
