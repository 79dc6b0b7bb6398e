"""Reports of a run: the JSON document and the HTML page to look at, from the same objects.

``build_document`` turns a batch summary into the report document (plain data);
``write_json_report`` and ``write_html_report`` both read that one document.
"""
from __future__ import annotations

from .document import build_document
from .html import write_html_report
from .json import write_json_report

__all__ = ["build_document", "write_html_report", "write_json_report"]
