"""The README's reliability table: run the bad-input, fault, batch and determinism tests and count.

Why a script: the table's numbers must come from a run, not be typed in. Each test case belongs
to one group by its test function; the script runs pytest once (with a JUnit XML report) and
prints a Markdown table of cases tried and their outcomes per group.

    .venv/bin/python scripts/reliability_table.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
FILES = ["Testing/test_faults.py", "Testing/test_batch.py", "Testing/test_determinism.py", "Testing/test_mrml.py"]
#: group -> (test functions, what every case of the group must show)
GROUPS = OrderedDict([
    ("files", (["test_files", "test_unreadable_file"],
               "refused: one line naming the file and the problem, exit code 2, no output, input unchanged, "
               "the rest of the batch processed")),
    ("geometry: refused", (["test_geometry_refused"],
                           "refused as above (the huge header before any voxel is read)")),
    ("geometry: processed", (["test_geometry_processed"],
                             "outputs on the input's exact grid, finite, input unchanged")),
    ("models", (["test_models"], "refused: one line naming the model file, exit code 2, no output; the pickle "
                                 "that would run code does not")),
    ("faults", (["test_sigkill_mid_batch_then_rerun_completes", "test_disk_full_or_read_only_mid_batch_stops_cleanly",
                 "test_read_only_output_folder_is_refused_up_front", "test_batch_goes_on_and_leaves_no_temporary_file",
                 "test_cuda_out_of_memory_falls_back_to_smaller_batches",
                 "test_cuda_out_of_memory_at_batch_size_one_moves_to_the_cpu"],
                "no partial file; complete sets kept; rerun completes; OOM retried smaller, then on the CPU")),
    ("batch names and overwrite", (["test_same_file_names_in_different_folders_keep_both",
                                    "test_rerun_resumes_and_overwrite_redoes",
                                    "test_another_runs_outputs_are_kept_unless_overwrite",
                                    "test_case_stems_are_distinct_and_stable",
                                    "test_process_folder_keeps_same_named_inputs_apart_and_resumes",
                                    "test_cancel_mid_batch_keeps_complete_sets"],
                                   "distinct stems, nothing overwritten unasked, rerun skips, summary maps inputs")),
    ("Slicer scene", (["test_bad_inputs_raise_and_leave_no_node"],
                      "20 error paths: no new node, input voxels, IJK-to-RAS and transform unchanged")),
    ("determinism", (["test_same_map_across_runs_and_batch_sizes",
                      "test_sampled_score_is_bit_identical_with_the_same_seed"],
                     "bit-identical across runs and seeds; batch sizes 1/7/32 within the stated tolerance")),
])


def outcomes(xml_path: Path) -> Dict[str, List[str]]:
    """test function name -> the outcome of each of its cases (passed, skipped, failed)."""
    found: Dict[str, List[str]] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        function = case.get("name", "").split("[")[0]
        status = "passed"
        if case.find("skipped") is not None:
            status = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            status = "failed"
        found.setdefault(function, []).append(status)
    return found


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as folder:
        xml_path = Path(folder) / "report.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml_path}",
                        *FILES], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        found = outcomes(xml_path)
    print("| group | cases tried | passed | skipped | failed | every case shows |")
    print("|---|---:|---:|---:|---:|---|")
    total = {"tried": 0, "passed": 0, "skipped": 0, "failed": 0}
    for group, (functions, shows) in GROUPS.items():
        statuses = [s for f in functions for s in found.get(f, [])]
        counts = {k: statuses.count(k) for k in ("passed", "skipped", "failed")}
        cells = [group, len(statuses), counts["passed"], counts["skipped"], counts["failed"], shows]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
        total["tried"] += len(statuses)
        for key, value in counts.items():
            total[key] += value
    print(f"| **all** | {total['tried']} | {total['passed']} | {total['skipped']} | {total['failed']} | |")
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
