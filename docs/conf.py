"""Sphinx configuration: MyST Markdown pages, the API reference from the docstrings.

Sphinx + MyST rather than MkDocs: the docstrings are Google style, which Sphinx's napoleon
reads as they are; autodoc imports the installed packages, so the reference is what users
get; MyST keeps every page plain Markdown, which Sybil runs as tests. Built with -W
(warnings are errors) by ``make docs``. No intersphinx: the build must work offline.
"""

from __future__ import annotations

import logging

# transitions logs every trigger at INFO; the declaration fires some when it is validated.
logging.getLogger("transitions").setLevel(logging.WARNING)

project = "campaign-states"
author = "The campaign-states developers"
copyright = "2026, the campaign-states developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "screenshots"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
# The changelog page includes the README's changelog, whose entries start at H3 there.
suppress_warnings = ["myst.header"]

# `Name` in a docstring is a cross-reference when it resolves, plain code when not.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = "campaign-states"
