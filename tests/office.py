"""Debian's LibreOffice, as a reader of a workbook opens it (``make tools`` installs
``libreoffice-calc-nogui`` when missing; never skipped)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def pdf_of(workbook: Path) -> bytes:
    """Convert ``workbook`` to PDF with ``soffice --headless`` (a profile of its own beside
    the file, so that concurrent runs do not share one) and return the PDF's bytes; fails the
    test when LibreOffice is missing or cannot open the file."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    assert soffice, "LibreOffice is missing: `make tools` installs Debian's libreoffice-calc-nogui"
    out = workbook.parent
    done = subprocess.run(
        [
            soffice,
            f"-env:UserInstallation=file://{out / 'lo-profile'}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(out),
            str(workbook),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    pdf = workbook.with_suffix(".pdf")
    assert done.returncode == 0 and pdf.exists(), done.stderr[-2000:]
    content = pdf.read_bytes()
    assert content.startswith(b"%PDF"), content[:100]
    return content
