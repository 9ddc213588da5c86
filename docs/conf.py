"""Sphinx configuration for softmaxc's documentation.

Build (from the repository root, after building or installing softmaxc):

    python -m sphinx -W -b html docs docs/_build/html

The build needs no network: math is typeset by a MathJax 3 copy that the
``sphinx-mathjax-offline`` package ships, figures are drawn at build time, and no
inventory is fetched (no intersphinx).
"""

import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent

# Document this checkout's softmaxc (its compiled modules must be built): the API page and
# the build-time figures import it.
sys.path.insert(0, str(ROOT))

import softmaxc  # noqa: E402
from docutils import nodes  # noqa: E402
from sphinx.transforms import SphinxTransform  # noqa: E402


def _release():
    """softmaxc's version; pyproject.toml's when the package metadata is not installed."""
    if not softmaxc.__version__.startswith("0+unknown"):
        return softmaxc.__version__
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)


# -- Project -------------------------------------------------------------------------------
project = "softmaxc"
author = "The softmaxc developers"
copyright = "The softmaxc developers"
release = _release()
version = release

# -- Extensions ----------------------------------------------------------------------------
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: no CDN
    "sphinx_copybutton",
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# MyST: $...$ and $$...$$ math (``$$ ... $$ (label)`` numbers an equation, cited with the
# {eq} role), and bare amsmath environments (\begin{align} ... \end{align}).
myst_enable_extensions = ["dollarmath", "amsmath", "substitution"]
myst_heading_anchors = 3
math_numfig = True
math_eqref_format = "({number})"

# The local MathJax (sphinx-mathjax-offline sets the same path; stated here too, so that the
# pages never point at Sphinx's default, a CDN).
mathjax_path = "mathjax/tex-chtml.js"

# The performance page shows the benchmark chart when benchmarks/run.py has written it,
# and says how to produce it otherwise (the build never depends on a benchmark run).
BENCHMARK_CHART = DOCS / "_static" / "benchmark.png"
if BENCHMARK_CHART.exists():
    _benchmark = "![softmaxc's time against its peers'](_static/benchmark.png)"
else:
    _benchmark = (
        "No chart has been produced in this checkout yet: run `python benchmarks/run.py` "
        "(it writes `docs/_static/benchmark.png`) and build the documentation again."
    )
myst_substitutions = {"version": release, "benchmark_figure": _benchmark}

# -- API reference -------------------------------------------------------------------------
autosummary_generate = False  # docs/api.md documents every object on the page itself
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autodoc_preserve_defaults = True
numpydoc_show_class_members = False

# -- Build-time figures (matplotlib plot directive) ----------------------------------------
plot_basedir = str(DOCS)
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 130)]
plot_rcparams = {"figure.figsize": (7.0, 4.0), "savefig.bbox": "tight"}

# -- HTML ----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"softmaxc {release}"
html_static_path = ["_static"]
html_css_files = ["softmaxc.css"]
html_theme_options = {
    "logo": {"text": f"softmaxc {release}"},
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sphinx = False  # its footer would link to a remote site
# Pages without subpages need no section navigation: their text and tables get the width.
html_sidebars = {"index": [], "numerics": [], "api": [], "gallery": [], "performance": []}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


# -- Typography ------------------------------------------------------------------------------
class KeepPunctuationWithMath(SphinxTransform):
    """Glue the punctuation that follows inline math to it (``$p$,`` ``$y$:``): the browser
    may otherwise break the line between MathJax's box and the comma."""

    default_priority = 800
    PUNCTUATION = re.compile(r"^[.,;:!?)\]]+")

    def apply(self):
        for math in list(self.document.findall(nodes.math)):
            following = math.next_node(descend=False, siblings=True)
            if not isinstance(following, nodes.Text):
                continue
            glued = self.PUNCTUATION.match(str(following))
            if not glued:
                continue
            rest = str(following)[glued.end():]
            parent = math.parent
            group = nodes.inline(classes=["nowrap"])
            parent.replace(math, group)
            group += [math, nodes.Text(glued.group())]
            if rest:
                parent.replace(following, nodes.Text(rest))
            else:
                parent.remove(following)


def setup(app):
    app.add_transform(KeepPunctuationWithMath)
