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
import select
import shutil
import subprocess
import sys
import time

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
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")


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
        fetched = ["src", "data", "poster", "action"]
        if tag != "a":  # following a link is not loading it
            fetched.append("href")
        self.loads += [attrs[name] for name in fetched if attrs.get(name)]
        self.loads += [entry.split()[0] for entry in (attrs.get("srcset") or "").split(",")
                       if entry.strip()]
        self.loads += CSS_URL.findall(attrs.get("style") or "")
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
            self.loads += CSS_URL.findall(data)
        if self.dt_id:
            self.ids[self.dt_id] += data
        if not NOT_PROSE.intersection(self.open):
            self.prose.append(data)


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: math must typeset offline
]
# Waits for the page's load event and then for MathJax's first typesetting pass (a page
# whose MathJax did not load has no startup promise, and its math stays raw TeX).
DOM_AFTER_MATHJAX = """(async () => {
  if (document.readyState !== "complete") {
    await new Promise(resolve => addEventListener("load", resolve));
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  return document.documentElement.outerHTML;
})()"""


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class _Browser:
    """Headless Chromium driven through the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, chromium, profile):
        # The browser is not under test: it must not inherit a sanitizer runtime preloaded
        # into the test process (scripts/sanitize.sh asan), which breaks it.
        env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
        self.process = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', chromium,
             *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.pending = b""
        self.last_id = 0
        self.events = []

    def _receive(self, deadline):
        while b"\0" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.process.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
            self.pending += chunk
        message, self.pending = self.pending.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, session=None, **params):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.process.stdin.write(json.dumps(message).encode() + b"\0")
        self.process.stdin.flush()
        deadline = time.monotonic() + 120
        while True:
            reply = self._receive(deadline)
            if reply.get("id") != self.last_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def render(self, page):
        """The DOM of `page` after MathJax ran, and the remote URLs the page requested."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Network.enable", session)
        self.call("Page.navigate", session, url=page.as_uri())
        dom = self.call("Runtime.evaluate", session, expression=DOM_AFTER_MATHJAX,
                        awaitPromise=True, returnByValue=True)
        self.call("Target.closeTarget", targetId=target)
        assert "exceptionDetails" not in dom, dom
        requests = [event["params"]["request"]["url"] for event in self.events
                    if event.get("sessionId") == session
                    and event.get("method") == "Network.requestWillBeSent"]
        return dom["result"]["value"], [url for url in requests if REMOTE.match(url)]

    def close(self):
        self.process.stdin.close()  # Chromium exits when its pipe closes
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


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
    names = [page.relative_to(html_dir).as_posix() for page in pages[:-1]] + [CONTROL]
    # Two browsers, each rendering every other page (MathJax's typesetting dominates).
    browsers = [_Browser(chromium, scratch / f"profile-{i}") for i in range(2)]
    try:
        with concurrent.futures.ThreadPoolExecutor(len(browsers)) as pool:
            shares = pool.map(lambda i: [browsers[i].render(page) for page in pages[i::2]],
                              range(len(browsers)))
            results = {}
            for i, share in enumerate(shares):
                results.update(zip(pages[i::2], share))
    finally:
        for browser in browsers:
            browser.close()
    return {name: (page.read_text(encoding="utf-8"), *results[page])
            for name, page in zip(names, pages)}


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
        raw = [prose.index(tex) for tex in RAW_TEX if tex in prose]
        if raw:
            where = min(raw)
            problems.append(f"{name}: raw TeX in the text: {prose[where:where + 100]!r}")
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
            if REMOTE.match(url):
                remote.append(f"{page.relative_to(html_dir)}: {url}")
    for css in (html_dir / "_static").rglob("*.css"):
        for url in CSS_URL.findall(css.read_text(encoding="utf-8", errors="replace")):
            if REMOTE.match(url):
                remote.append(f"{css.relative_to(html_dir)}: {url}")
    assert not remote, "\n".join(remote)


def test_pages_request_nothing_remote_in_the_browser(rendered):
    requested = {name: urls for name, (_, _, urls) in rendered.items()}
    # The control page proves that the page's requests are seen at all.
    assert requested.pop(CONTROL) == ["https://example.invalid/x.png"]
    assert not any(requested.values()), {name: urls for name, urls in requested.items() if urls}
