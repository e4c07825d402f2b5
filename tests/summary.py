#!/usr/bin/env python3
"""Counts GoogleTest cases across `meson test` runs and prints the closing line.

Usage: summary.py BUILD_DIR... ; prints per-build counts and a final
'secmem: N passed, N failed, N skipped'. A test program that crashed or timed
out before writing its report counts as one failure.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def count(build: Path):
    passed = failed = skipped = 0
    failing = set()  # meson tests with at least one failed case
    junit = build / "meson-logs" / "testlog.junit.xml"
    if junit.exists():
        for suite in ET.parse(junit).getroot():
            # suite names look like 'secmem.<meson test>.<gtest suite>'
            parts = suite.get("name", "").split(".")
            test_name = parts[1] if len(parts) > 2 else ""
            for case in suite.iter("testcase"):
                kinds = {child.tag for child in case}
                if "failure" in kinds or "error" in kinds:
                    failed += 1
                    failing.add(test_name)
                elif "skipped" in kinds or case.get("status") == "notrun" or case.get("result") == "skipped":
                    skipped += 1
                else:
                    passed += 1
    log = build / "meson-logs" / "testlog.json"
    if log.exists():
        for line in log.read_text().splitlines():
            result = json.loads(line)
            # A program that failed without a failed case (crash, timeout, bad exit).
            if result.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL") and result.get("name") not in failing:
                failed += 1
    return passed, failed, skipped


def main():
    total = [0, 0, 0]
    for arg in sys.argv[1:]:
        p, f, s = count(Path(arg))
        print(f"{arg}: {p} passed, {f} failed, {s} skipped")
        total = [total[0] + p, total[1] + f, total[2] + s]
    print(f"secmem: {total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 1 if total[1] else 0


if __name__ == "__main__":
    sys.exit(main())
