"""``make lint``'s dependency audit: pip-audit over the installed environment, said plainly.

pip-audit asks a vulnerability database (PyPI's JSON API by default) about every installed
distribution. Where that database cannot be reached (a machine behind a package mirror, or
offline), pip-audit either fails with a connection error or "skips" every package and still
prints "No known vulnerabilities found". Neither is a result: this says that the audit could
not be done, names what was not audited, and does not fail the build. A vulnerability found
in what *was* audited fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys

UNREACHABLE_MARKERS = ("ConnectionError", "NameResolutionError", "Max retries exceeded")


def main() -> int:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "--skip-editable",
            "--progress-spinner",
            "off",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        if any(marker in run.stderr for marker in UNREACHABLE_MARKERS):
            print("pip-audit: its vulnerability database cannot be reached from here: NOT AUDITED")
            return 0
        sys.stderr.write(run.stderr)
        return run.returncode or 1
    dependencies = report.get("dependencies", [])
    skipped = [d["name"] for d in dependencies if d.get("skip_reason")]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    for dependency in vulnerable:
        ids = ", ".join(v["id"] for v in dependency["vulns"])
        print(f"pip-audit: {dependency['name']} {dependency['version']}: {ids}")
    audited = len(dependencies) - len(skipped)
    if dependencies and not audited:
        print(
            f"pip-audit: the vulnerability database knows none of the {len(dependencies)} "
            "installed packages (a mirror, not PyPI?): NOT AUDITED"
        )
    elif skipped:
        print(f"pip-audit: {audited} packages audited; not audited: {', '.join(sorted(skipped))}")
    else:
        print(f"pip-audit: {audited} packages audited")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    raise SystemExit(main())
