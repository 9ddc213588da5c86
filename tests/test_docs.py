"""The documentation: its examples run, it builds with warnings as errors, every built page
has all its math typeset by the bundled MathJax in headless Chromium with the network cut
off, the API page shows every public function with its real signature, and no page loads
anything from a remote host.

Without Sphinx (the `docs` extra) or Chromium the site tests skip; with
SOFTMAXC_REQUIRE_DOCS=1 (set by .ci/run) they fail instead.
"""

import concurrent.futures
import doctest
import html.parser
import importlib.util
import inspect
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import softmaxc

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKDOWN_PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
DOCS_MODULES = [
    "sphinx", "myst_parser", "numpydoc", "pydata_sphinx_theme", "sphinx_copybutton",
    "matplotlib", "sphinx-mathjax-offline",
]
REQUIRE_DOCS = os.environ.get("SOFTMAXC_REQUIRE_DOCS") == "1"

# TeX that MathJax did not typeset, if it shows in a page's rendered text.
RAW_TEX = ["$", "\\(", "\\)", "\\[", "\\]", "\\begin{", "\\end{"]
# Elements whose text is code or machinery, not prose: raw TeX may legitimately appear there.
NOT_PROSE = {"script", "style", "pre", "code", "textarea", "noscript", "template",
             "mjx-container"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
REMOTE = re.compile(r"^\s*(https?:)?//", re.I)


def _unavailable(reason):
    if REQUIRE_DOCS:
        pytest.fail(f"{reason}, and SOFTMAXC_REQUIRE_DOCS=1 requires the documentation tests")
    pytest.skip(reason)


def _page_id(path):
    return path.relative_to(DOCS).as_posix()


# -- (a) the examples of every page ---------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~).*$", re.M)


@pytest.mark.skipif(not DOCS.is_dir(), reason="not run from a source checkout")
@pytest.mark.parametrize("page", MARKDOWN_PAGES, ids=_page_id)
def test_page_examples(page):
    # Fence lines become blank lines, so that a closing fence never reads as expected output.
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    test = doctest.DocTestParser().get_doctest(text, {}, _page_id(page), str(page), 0)
    if page.parent.name == "derivations" and page.name != "index.md":
        assert test.examples, f"{_page_id(page)} has no worked example (a >>> block)"
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


# -- (b) the build ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built with -W (warnings are errors) into a temporary folder."""
    if not DOCS.is_dir():
        pytest.skip("not run from a source checkout")
    missing = [name for name in DOCS_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        _unavailable(f"documentation tools missing: {', '.join(missing)} (the `docs` extra)")
    build = tmp_path_factory.mktemp("docs")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
               "-d", str(build / "doctrees"), str(DOCS), str(build / "html")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done, build / "html"


def _built(site):
    done, html_dir = site
    if done.returncode != 0:
        pytest.fail("the documentation did not build (see test_site_builds_without_warnings)")
    return html_dir


def test_site_builds_without_warnings(site):
    done, html_dir = site
    assert done.returncode == 0, f"sphinx -W failed:\n{done.stdout}\n{done.stderr}"
    assert (html_dir / "index.html").is_file()


def _pages(html_dir):
    """Every page of the site (not the theme's and plot directive's own files)."""
    return sorted(p for p in html_dir.rglob("*.html")
                  if not any(part.startswith("_") or part == "plot_directive"
                             for part in p.relative_to(html_dir).parts[:-1]))


def test_site_shows_the_real_version(site):
    html_dir = _built(site)
    version = softmaxc.__version__
    if version.startswith("0+unknown"):
        pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
        version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert f"softmaxc {version}" in (html_dir / "index.html").read_text(encoding="utf-8")


# -- (c) every page's math, typeset in a browser ----------------------------------------------


class _Page(html.parser.HTMLParser):
    """What the tests need from one page's HTML: math elements as Sphinx emitted them,
    MathJax's output, the prose text, and every URL the page loads."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.open = []              # stack of open tags
        self.math_elements = 0      # Sphinx's <span class="math"> and <div class="math">
        self.typeset = 0            # MathJax's <mjx-container>
        self.errors = 0             # MathJax's <mjx-merror> (a TeX error)
        self.prose = []
        self.loads = []             # URLs the page fetches (not <a href>)
        self.ids = {}               # <dt id=...> -> its text (API signatures)
        self.dt_id = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "math" in (attrs.get("class") or "").split():
            self.math_elements += 1
        if tag == "mjx-container":
            self.typeset += 1
        if tag == "mjx-merror" or "data-mjx-error" in attrs:
            self.errors += 1
        for name in ("src", "srcset", "data", "poster", "action") + (("href",) * (tag != "a")):
            if attrs.get(name):
                self.loads.append(attrs[name])
        self.loads += re.findall(r"url\(\s*['\"]?([^'\")]+)", attrs.get("style") or "")
        if tag == "dt":
            self.dt_id = attrs.get("id")
            if self.dt_id:
                self.ids[self.dt_id] = ""
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag == "dt":
            self.dt_id = None
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data):
        if "style" in self.open:
            self.loads += re.findall(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)", data)
        if self.dt_id:
            self.ids[self.dt_id] += data
        if not NOT_PROSE.intersection(self.open):
            self.prose.append(data)


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: math must typeset offline
    "--virtual-time-budget=10000",            # let MathJax finish before the DOM is dumped
]


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _render(chromium, page, scratch):
    """The DOM of `page` after its scripts ran, and the remote URLs the page requested."""
    profile = scratch / f"profile-{page.stem}-{abs(hash(page))}"
    net_log = profile.with_suffix(".netlog.json")
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--log-net-log={net_log}", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed on {page}: {done.stderr[-2000:]}"
    return done.stdout, _requested_remote_urls(net_log)


def _requested_remote_urls(net_log):
    """Remote requests the page made.  Chromium's own background requests have no origin;
    a file:// page's requests have the initiator "null"."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start_job
            and REMOTE.match(event["params"].get("url", ""))
            and event["params"].get("initiator") != "not an origin"]


CONTROL = "control-page-with-a-remote-image.html"


@pytest.fixture(scope="module")
def rendered(site, tmp_path_factory):
    """page -> (its HTML as built, its DOM after MathJax, the remote URLs it requested),
    for every page, plus a control page that requests a remote image."""
    html_dir = _built(site)
    chromium = _chromium()
    if chromium is None:
        _unavailable("Chromium is not installed (Debian: apt-get install chromium)")
    scratch = tmp_path_factory.mktemp("chromium")
    control = scratch / CONTROL
    control.write_text('<html><body><img src="https://example.invalid/x.png"></body></html>')
    pages = _pages(html_dir) + [control]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda page: _render(chromium, page, scratch), pages))
    names = [page.relative_to(html_dir).as_posix() for page in pages[:-1]] + [CONTROL]
    return {name: (page.read_text(encoding="utf-8"), *result)
            for name, page, result in zip(names, pages, results)}


def test_every_page_has_all_its_math_typeset(rendered):
    problems = []
    total = 0
    for name, (built, dom, _) in rendered.items():
        if name == CONTROL:
            continue
        expected = _Page(built).math_elements
        after = _Page(dom)
        total += expected
        if after.typeset != expected:
            problems.append(f"{name}: {expected} math elements, {after.typeset} typeset")
        if after.errors:
            problems.append(f"{name}: {after.errors} TeX errors")
        prose = "".join(after.prose)
        for tex in RAW_TEX:
            if tex in prose:
                where = prose.index(tex)
                problems.append(f"{name}: raw {tex!r} in the text: "
                                f"{prose[max(0, where - 60):where + 60]!r}")
    assert not problems, "\n".join(problems)
    assert total > 0, "the site has no math at all"


# -- (d) the API page --------------------------------------------------------------------------


def _public_objects():
    names = {f"softmaxc.{name}": getattr(softmaxc, name) for name in softmaxc.__all__}
    names["softmaxc.testing.check_gradient"] = softmaxc.testing.check_gradient
    return names


def test_api_page_lists_every_public_name_with_its_signature(site):
    html_dir = _built(site)
    api = _Page((html_dir / "api.html").read_text(encoding="utf-8"))
    table = (html_dir / "api.html").read_text(encoding="utf-8")
    for qualified, obj in _public_objects().items():
        assert qualified in api.ids, f"{qualified} is not documented on the API page"
        assert f'href="#{qualified}"' in table, f"{qualified} is not in the summary table"
        shown = re.sub(r"\s+", "", api.ids[qualified]).rstrip("#¶")
        if callable(obj):
            expected = f"{qualified}{inspect.signature(obj)}"
        else:
            expected = f"{qualified}={obj!r}"
        assert shown == re.sub(r"\s+", "", expected), (shown, expected)


# -- (e) nothing remote ------------------------------------------------------------------------


def test_pages_load_nothing_remote(site):
    html_dir = _built(site)
    remote = []
    for page in _pages(html_dir):
        for url in _Page(page.read_text(encoding="utf-8")).loads:
            url = url if isinstance(url, str) else "".join(url)
            if REMOTE.match(url):
                remote.append(f"{page.relative_to(html_dir)}: {url}")
    for css in (html_dir / "_static").rglob("*.css"):
        for match in re.findall(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)",
                                css.read_text(encoding="utf-8", errors="replace")):
            url = "".join(match)
            if REMOTE.match(url):
                remote.append(f"{css.relative_to(html_dir)}: {url}")
    assert not remote, "\n".join(remote)


def test_pages_request_nothing_remote_in_the_browser(rendered):
    requested = {name: urls for name, (_, _, urls) in rendered.items()}
    # The control page proves that the page's requests are seen at all.
    assert requested.pop(CONTROL) == ["https://example.invalid/x.png"]
    assert not any(requested.values()), {name: urls for name, urls in requested.items() if urls}
