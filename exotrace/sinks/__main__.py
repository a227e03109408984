"""``python -m exotrace.sinks docs/sinks.md``: regenerate the config tables and examples in a page."""

from __future__ import annotations

import sys
from pathlib import Path

from exotrace.sinks.config import render_docs

for arg in sys.argv[1:]:
    page = Path(arg)
    page.write_text(render_docs(page.read_text(encoding="utf-8")), encoding="utf-8")
