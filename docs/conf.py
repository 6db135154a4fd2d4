"""Sphinx configuration of the neuralign documentation (``make docs``)."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# LSL discovery stays on this host while the gallery's examples run (before anything imports
# pylsl); the package itself does the same on import unless LSLAPICFG is already set.
os.environ.setdefault("LSLAPICFG", str(REPO / "neuralign" / "lsl_api.cfg"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MNE_DONTWRITE_HOME", "true")
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(REPO / "examples"))

from neuralign._version import __version__  # noqa: E402

project = "neuralign"
author = "neuralign developers"
copyright = "neuralign developers"  # noqa: A001 - Sphinx's name for it
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_raw", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5",
                    "**/sg_execution_times.rst"]
templates_path = []

# ---- MyST: the docs/*.md pages are Markdown, included as they are ---------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links

# ---- API reference: autodoc + numpydoc --------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_mock_imports = []
numpydoc_show_class_members = False  # autodoc's :members: lists them (no stub pages per member)
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# ---- sphinx-gallery: examples/ run on the simulator during the build ------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(REPO / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every plot_*.py is executed
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "matplotlib_animations": False,
    "min_reported_time": 1,
}

# ---- HTML -------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"neuralign {version}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 7,
}
html_static_path = []
html_show_sourcelink = False
