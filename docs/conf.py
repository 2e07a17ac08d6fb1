"""Sphinx configuration of the idigdask documentation (``make docs``).

The build needs no network: the inventories of the projects the pages link to are
shipped in ``docs/inventories/`` (``python docs/inventories/make_inventories.py``
writes them), and a mapping whose file is missing is left out, so its names read as
plain text instead of failing the build. The worked examples in ``docs/examples/``
run at every build (sphinx-gallery) and write ``docs/auto_examples/``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's own idigdask, installed or not
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import idigdask  # noqa: E402

project = "idigdask"
author = "the idigdask developers"
copyright = "the idigdask developers"
release = version = idigdask.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

root_doc = "index"
templates_path = ["_templates"]
html_static_path = ["_static"]
exclude_patterns = ["_build", "examples/*.rst", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.md5",
                    "inventories"]

# ---------------------------------------------------------------- the API pages
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"          # types are in the numpydoc sections
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# ---------------------------------------------------------------- references
# Nitpicky: every reference to idigdask's own objects must resolve. External names
# resolve through the shipped inventories; one that has no entry there reads as plain
# text (the patterns below), never a failed build.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(dask|distributed|dask_jobqueue|xarray|zarr|numcodecs|fsspec|s3fs"
               r"|aiohttp|keras|tensorflow|numpy|pandas|pyarrow|PIL|matplotlib"
               r"|imagehash|simplejpeg)(\..*)?"),
    (r"py:.*", r"(np|pd|xr|dd)\..*"),
]
if os.environ.get("IDIGDASK_DOCS_EXTERNAL") == "strict":  # list what the inventories lack
    nitpick_ignore_regex = []

sys.path.insert(0, str(HERE / "inventories"))
from make_inventories import URLS as INVENTORIES  # noqa: E402  (name -> docs root)

intersphinx_mapping = {
    name: (url, str(HERE / "inventories" / f"{name}.inv"))
    for name, url in INVENTORIES.items()
    if (HERE / "inventories" / f"{name}.inv").is_file()
}
intersphinx_timeout = 1

# ---------------------------------------------------------------- worked examples
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"/_|__init__\.py",
    "plot_gallery": "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "reset_modules": ("matplotlib",),
    # the computation-times page loads its table scripts from a CDN: not offline
    "write_computation_times": False,
}

# ---------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"idigdask {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_end": ["navbar-icon-links"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "auto"}
html_show_sourcelink = False
html_favicon = "_static/favicon.svg"
html_last_updated_fmt = None


# ---------------------------------------------------------------- ARCHITECTURE.md
# The architecture page is the repository's ARCHITECTURE.md itself: its picture, its
# table and its text, converted to reStructuredText when the page is read.
import re  # noqa: E402

from docutils.parsers.rst import Directive  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402


def _inline(text: str) -> str:
    """Markdown inline code to reStructuredText (an escaped space before a letter)."""
    def literal(match: re.Match) -> str:
        after = text[match.end():match.end() + 1]
        return f"``{match.group(1)}``" + ("\\ " if after.isalnum() else "")
    return re.sub(r"`([^`]+)`", literal, text)


def markdown_to_rst(markdown: str) -> list[str]:
    """The subset of Markdown ARCHITECTURE.md is written in, as reST lines."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("# ") and not out:          # the title: the page has its own
            i += 1
        elif line.startswith("```"):                     # a fenced block: a literal block
            out += [".. code-block:: text", ""]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append("   " + lines[i] if lines[i] else "")
                i += 1
            out.append("")
            i += 1
        elif line.startswith("|"):                       # a table: a list-table
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split(" | ")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)
                i += 1
            out += [".. list-table::", "   :header-rows: 1", "   :class: architecture", ""]
            for row in rows:
                for j, cell in enumerate(row):
                    out.append(("   * - " if j == 0 else "     - ") + _inline(cell))
            out.append("")
        elif line.startswith("#"):
            title = line.lstrip("#").strip()
            out += [title, "-" * len(title), ""]
            i += 1
        else:
            out.append(_inline(line))
            i += 1
    return out


class ArchitectureMarkdown(Directive):
    """``.. architecture-md:: ../ARCHITECTURE.md``: include that file's content."""

    required_arguments = 1

    def run(self):
        source = Path(self.state.document.current_source).parent / self.arguments[0]
        self.state.document.settings.record_dependencies.add(str(source))
        lines = markdown_to_rst(source.read_text(encoding="utf-8"))
        node = self.state_machine.document  # parse into the current section
        self.state_machine.insert_input(StringList(lines, str(source)), str(source))
        del node
        return []


# ---------------------------------------------------------------- own references
# A docstring names an object as its own module sees it (``redact`` in idigdask.fetch,
# ``idigdask.build.BuildOptions``); the pages document it once, under the name a user
# imports (``idigdask.urls.redact``, ``idigdask.BuildOptions``). A reference that the
# Python domain cannot find is looked up as a Python object and sent to the page of
# the documented object that is the same object. Anything else still warns.

def _import_dotted(path: str, attribute: bool = False):
    """The object a dotted path names; with ``attribute``, ``a.b`` is ``a``'s attribute
    ``b`` even where a module ``a.b`` exists (``idigdask.train`` the function)."""
    parts = path.split(".")
    for cut in range(len(parts) - (1 if attribute and len(parts) > 1 else 0), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _documented(env) -> dict[int, str]:
    cache = getattr(env, "_idigdask_documented", None)
    domain = env.get_domain("py")
    if cache is None or cache[0] != len(domain.objects):
        found: dict[int, str] = {}
        for name, entry in domain.objects.items():
            if name.startswith("idigdask") and entry.objtype != "module" and not entry.aliased:
                obj = _import_dotted(name, attribute=True)
                if obj is not None and not isinstance(obj, (str, int, float, tuple)):
                    found.setdefault(id(obj), name)
        cache = (len(domain.objects), found)
        env._idigdask_documented = cache
    return cache[1]


def resolve_own(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module") or "", node.get("py:class") or ""
    domain = env.get_domain("py")
    # Where the docstring was written: the real module of the documented object.
    context = _import_dotted(f"{module}.{cls}" if cls else module) if module else None
    real = getattr(context, "__module__", None) or getattr(context, "__name__", None)
    candidates = []
    for base in dict.fromkeys(filter(None, [module, real])):
        if cls:
            candidates.append(f"{base}.{cls}.{target}")
        candidates.append(f"{base}.{target}")
    candidates.append(target)
    documented = _documented(env)
    for candidate in candidates:
        if not candidate.startswith("idigdask"):
            continue
        if candidate in domain.objects:
            name = candidate
        else:
            obj = _import_dotted(candidate)
            name = documented.get(id(obj)) if obj is not None else None
        if name:
            return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", name,
                                       node, contnode)
    # Last: the one documented idigdask object whose name ends with the target.
    ends = [n for n in domain.objects
            if n.startswith("idigdask.") and n.endswith("." + target)
            and domain.objects[n].objtype != "module"]
    if len(set(documented.get(id(_import_dotted(n)), n) for n in ends)) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", ends[0],
                                   node, contnode)
    return None


def setup(app):
    app.add_directive("architecture-md", ArchitectureMarkdown)
    app.connect("missing-reference", resolve_own)
    return {"parallel_read_safe": True}
