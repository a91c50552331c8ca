"""The book: chapters execute (tiny profile), params.yaml matches them, the HTML is offline.

Also exact-value tests of the build machinery (semalign3d.book.*) on tiny hand-made inputs.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import yaml

from semalign3d.book import execute, offline, paper, params, paths, prepare, results, site, toc
from semalign3d.book.params import Parameter, PrepareStep
from semalign3d.book.toc import BookError, Chapter
from semalign3d.config import Config

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
SHARED = REPO.parent / "shared"
TOC_CHAPTERS = toc.chapters(BOOK)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _md(cells: list[tuple[str, str, list[str]]]) -> str:
    """A jupytext MyST notebook from (kind, source, tags) cells."""
    out = ["---", "kernelspec:", "  display_name: Python 3", "  language: python",
           "  name: python3", "---", ""]
    for kind, source, tags in cells:
        if kind == "md":
            out += [source, ""]
        else:
            out += ["```{code-cell} ipython3"]
            if tags:
                out += [f":tags: [{', '.join(tags)}]", ""]
            out += [source, "```", ""]
    return "\n".join(out)


def _chapter(tmp_path: Path, name: str, cells) -> Chapter:
    src = tmp_path / f"{name}.md"
    src.write_text(_md(cells))
    return Chapter(name=name, entry=name, source=src)


# ============================================================================ (a) chapters run


class _Executed:
    """Executes each toc chapter once per test session (tiny profile), on demand."""

    def __init__(self, out_dir: Path):
        raw = params.read_params(BOOK / "params.yaml")
        self.profile = params.profile(raw, "tiny")
        self.out_dir = out_dir
        self.done: dict[str, Path] = {}
        prepare.run_steps(self.profile.prepare, REPO)

    def get(self, chapter: Chapter) -> Path:
        if chapter.name not in self.done:
            r = execute.execute(chapter, self.profile.parameters(chapter.name),
                                self.out_dir / execute.output_name(chapter.name), cwd=REPO,
                                progress=False)
            self.done[chapter.name] = r.output
        return self.done[chapter.name]


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> _Executed:
    return _Executed(tmp_path_factory.mktemp("executed"))


@pytest.mark.parametrize("chapter", TOC_CHAPTERS, ids=lambda c: c.name)
def test_chapter_executes_with_tiny_profile(chapter: Chapter, executed: _Executed):
    out = executed.get(chapter)  # raises BookError naming the chapter and cell on any error
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill.parameters == executed.profile.parameters(chapter.name)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    assert execute.stderr_warnings(nb) == []
    assert sum(len(c.get("outputs", [])) for c in nb.cells) > 0


def test_data_chapter_reads_spair_mini(executed: _Executed):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the chapter then prints a note instead)")
    (ch,) = toc.select(TOC_CHAPTERS, ["02_data"])
    nb = nbformat.read(executed.get(ch), as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "6 categories, 12 images, 12 test pairs" in text
    assert "flip(flip(x)) == x: True" in text
    assert "cow: 21 ids, 9 left/right swaps:" in text


# ============================================================================ (b) offline HTML


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH (vendored JS)")
def test_built_book_loads_nothing_from_the_network(executed: _Executed, tmp_path: Path):
    from semalign3d.book import vendor

    done = {c.name: executed.get(c) for c in TOC_CHAPTERS}
    vendored = vendor.vendor(BOOK, tmp_path / "vendor", site.page_dirs(BOOK), log=lambda m: None)
    staging = site.stage(BOOK, tmp_path / "src", TOC_CHAPTERS, done, vendored)
    html = site.build_html(staging, tmp_path / "work", tmp_path / "html")  # raises if online
    assert html == tmp_path / "html" and not (tmp_path / "work" / "_build" / "html").exists()

    assert (html / "index.html").is_file()
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html"))
    for c in TOC_CHAPTERS:
        assert f"{c.entry}.html" in pages
    assert offline.external_resources(html) == []
    # the check is not vacuous: pages do load scripts, from the local copies
    # (chapter 8's static sliders exist with or without ../shared; chapter 2's need spair-mini)
    ch2 = (html / "chapters" / "08_interactive.html").read_text()
    srcs = [u for kind, u in offline.html_resources(ch2) if kind == "<script src>"]
    assert any(u.startswith("../_static/embed-amd.js") for u in srcs)
    assert any(u.startswith("../_static/require.js") for u in srcs)
    assert any(u.startswith("../_static/mathjax/es5/tex-mml-chtml.js") for u in srcs)
    assert (html / "_static" / "mathjax" / "es5" / "output" / "chtml" / "fonts").is_dir()
    assert (html / "chapters" / "widgets" / "anywidget@~0.11.*" / "dist" / "index.js").is_file()
    # each inline <script> once (book/_ext/dedupe_scripts.py): no doubled `const` declarations
    assert ch2.count("const THEBE_JS_URL") <= 1
    # no page loads a CSS/font from the web either
    for css in html.rglob("*.css"):
        assert not [u for u in offline.css_urls(css.read_text()) if offline.is_external(u)], css


# ============================================================================ (c) params.yaml


def test_params_yaml_matches_every_chapter_parameters_cell():
    specs = {c.name: params.chapter_parameters(c) for c in TOC_CHAPTERS}
    raw = params.read_params(BOOK / "params.yaml")
    params.validate(raw, specs, "book/params.yaml")  # raises listing every mismatch
    assert set(raw) >= {"default", "tiny"}
    for name, spec in specs.items():
        assert set(raw["default"]["chapters"][name]) == set(spec), name
        for prof in raw:
            assert set(params.profile(raw, prof).parameters(name)) == set(spec)


SPEC = {"category": Parameter("category", "cow"), "n_images": Parameter("n_images", 12),
        "sigma": Parameter("sigma", 0.5), "root": Parameter("root", None)}


def _raw(default: dict, tiny: dict | None = None) -> dict:
    raw = {"default": {"chapters": {"ch": default}}}
    if tiny is not None:
        raw["tiny"] = {"chapters": {"ch": tiny}}
    return raw


def test_validate_names_a_typo_with_a_suggestion():
    full = {"category": "cow", "n_images": 12, "sigma": 0.5, "root": None}
    params.validate(_raw(full, {"n_images": 4}), {"ch": SPEC})
    with pytest.raises(BookError, match="profile 'tiny', chapter 'ch': unknown parameter "
                                        "'n_image' \\(did you mean 'n_images'\\?\\)"):
        params.validate(_raw(full, {"n_image": 4}), {"ch": SPEC})
    with pytest.raises(BookError, match="missing parameters \\['sigma', 'root'\\]"):
        params.validate(_raw({"category": "cow", "n_images": 12}), {"ch": SPEC})
    with pytest.raises(BookError, match="unknown chapter 'chh' \\(did you mean 'ch'\\?\\)"):
        params.validate({"default": {"chapters": {"ch": full, "chh": {}}}}, {"ch": SPEC})
    with pytest.raises(BookError, match="'n_images' expects a int like 12, got 'four'"):
        params.validate(_raw(full, {"n_images": "four"}), {"ch": SPEC})


def test_profile_overrides_default_and_replaces_prepare():
    raw = {
        "default": {"prepare": [{"creates": "d", "run": ["python", "-c", "0"]}],
                    "chapters": {"a": {"x": 1, "y": 2}, "b": {"z": 3}}},
        "tiny": {"prepare": [], "chapters": {"a": {"y": 5}}},
    }
    tiny = params.profile(raw, "tiny")
    assert tiny.parameters("a") == {"x": 1, "y": 5}
    assert tiny.parameters("b") == {"z": 3}
    assert tiny.prepare == ()
    assert params.profile(raw, "default").prepare == (PrepareStep("d", ("python", "-c", "0")),)
    with pytest.raises(BookError, match="unknown profile 'big'"):
        params.profile(raw, "big")


def test_parse_parameters_exact():
    src = 'a = 1  # first\nb: float = 0.5\nc = "x # not a comment"  # third\nd = [1, 2]\ne = None'
    got = params.parse_parameters(src, "t")
    assert got == {
        "a": Parameter("a", 1, "first"), "b": Parameter("b", 0.5, ""),
        "c": Parameter("c", "x # not a comment", "third"), "d": Parameter("d", [1, 2], ""),
        "e": Parameter("e", None, ""),
    }
    assert params.parse_parameters("", "t") == {}
    with pytest.raises(BookError, match="'a' must have a literal default"):
        params.parse_parameters("a = len('x')", "t")
    with pytest.raises(BookError, match="line 1 of the parameters cell"):
        params.parse_parameters("import os", "t")
    with pytest.raises(BookError, match="plain names"):
        params.parse_parameters("a.b = 1", "t")


def test_parameter_cell_must_be_unique(tmp_path: Path):
    one = _chapter(tmp_path, "one", [("code", "x = 1", ["parameters"]), ("code", "x", [])])
    assert params.chapter_parameters(one) == {"x": Parameter("x", 1, "")}
    two = _chapter(tmp_path, "two", [("code", "x = 1", ["parameters"]),
                                     ("code", "y = 1", ["parameters"])])
    with pytest.raises(BookError, match="exactly one code cell tagged 'parameters', found 2"):
        params.chapter_parameters(two)
    none = _chapter(tmp_path, "none", [("code", "x = 1", [])])
    with pytest.raises(BookError, match="found 0"):
        params.chapter_parameters(none)


def test_check_overrides_and_parse_value():
    assert [params.parse_value(v) for v in ("3", "0.5", "true", "null", "chair")] == [
        3, 0.5, True, None, "chair"]
    params.check_overrides("ch", SPEC, {"category": "dog", "sigma": 1, "root": "/x"})
    with pytest.raises(BookError, match="unknown parameter 'categroy' \\(did you mean"):
        params.check_overrides("ch", SPEC, {"categroy": "dog"})
    with pytest.raises(BookError, match="'n_images' expects a int like 12, got True"):
        params.check_overrides("ch", SPEC, {"n_images": True})


# ============================================================================ toc


def _book(tmp_path: Path, toc_yaml: str, pages: dict[str, str]) -> Path:
    (tmp_path / "_toc.yml").write_text(textwrap.dedent(toc_yaml))
    for rel, text in pages.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


NB = _md([("code", "x = 1", ["parameters"])])
TOC = """
format: jb-book
root: intro
parts:
  - caption: A
    chapters:
      - file: ch/one
        sections:
          - file: ch/two.md
  - caption: B
    chapters:
      - file: ch/three
"""


def test_toc_entries_chapters_and_prune(tmp_path: Path):
    book = _book(tmp_path, TOC, {"intro.md": "# Intro\n", "ch/one.md": NB,
                                 "ch/two.md": "# plain page\n", "ch/three.md": NB})
    raw = toc.read_toc(book)
    assert toc.toc_entries(raw) == ["intro", "ch/one", "ch/two", "ch/three"]
    assert [(c.name, c.entry) for c in toc.chapters(book)] == [("one", "ch/one"),
                                                             ("three", "ch/three")]
    assert site.page_dirs(book) == ["", "ch"]
    pruned = toc.prune(raw, {"intro", "ch/three"})
    assert pruned == {"format": "jb-book", "root": "intro",
                      "parts": [{"caption": "B", "chapters": [{"file": "ch/three"}]}]}
    keep_section = toc.prune(raw, {"intro", "ch/one"})
    assert keep_section["parts"] == [{"caption": "A", "chapters": [{"file": "ch/one"}]}]
    with pytest.raises(BookError, match="unknown chapter 'four'; the toc lists"):
        toc.select(toc.chapters(book), ["four"])
    assert [c.name for c in toc.select(toc.chapters(book), ["ch/three.md", "one"])] == [
        "one", "three"]


def test_toc_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(BookError, match="no table of contents"):
        toc.read_toc(tmp_path)
    book = _book(tmp_path, "root: intro\nchapters:\n  - file: a/x\n  - file: b/x\n",
                 {"intro.md": "# i\n", "a/x.md": NB, "b/x.md": NB})
    with pytest.raises(BookError, match="share the name 'x'"):
        toc.chapters(book)
    (tmp_path / "a" / "x.ipynb").write_text("{}")
    with pytest.raises(BookError, match="exists as both x.md and x.ipynb"):
        toc.chapters(book)
    _book(tmp_path, "root: intro\nchapters:\n  - file: missing\n", {})
    with pytest.raises(BookError, match="page 'missing' has no .md or .ipynb"):
        toc.chapters(tmp_path)


def test_real_toc_lists_the_two_chapters():
    assert [c.name for c in TOC_CHAPTERS][:2] == ["01_overview", "02_data"]
    assert site.page_dirs(BOOK) == ["", "chapters"]
    assert site.site_dir(BOOK, "default") == BOOK / "_build" / "html"
    assert site.site_dir(BOOK, "tiny") == BOOK / "_build" / "html-tiny"


# ============================================================================ execute


def test_output_name_exact():
    assert execute.output_name("02_data") == "02_data.ipynb"
    assert execute.output_name("02_data", {"category": "chair"}) == "02_data__category=chair.ipynb"
    assert execute.output_name("c", {"n": 3, "a": "/tmp/x y", "f": True}) == (
        "c__a=_tmp_x_y__f=true__n=3.ipynb")


def test_is_fresh_needs_newer_copy_and_same_parameters(tmp_path: Path):
    src, out = tmp_path / "c.md", tmp_path / "c.ipynb"
    src.write_text("x")
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"a": 1}}
    nbformat.write(nb, out)
    os.utime(src, (1000, 1000))
    os.utime(out, (2000, 2000))
    assert execute.is_fresh(out, src, {"a": 1})
    assert not execute.is_fresh(out, src, {"a": 2})
    os.utime(src, (3000, 3000))
    assert not execute.is_fresh(out, src, {"a": 1})
    assert not execute.is_fresh(tmp_path / "missing.ipynb", src, {})
    # any newer dependency (package code, measured results) makes the copy stale too
    dep = tmp_path / "measured.json"
    dep.write_text("{}")
    os.utime(src, (1000, 1000))
    os.utime(dep, (2500, 2500))
    assert execute.is_fresh(out, [src, tmp_path / "gone.json"], {"a": 1})
    assert not execute.is_fresh(out, [src, dep], {"a": 1})


def test_chapter_dependencies_are_the_package_and_the_measurements(tmp_path: Path):
    from semalign3d.book.toc import Chapter

    (tmp_path / "book" / "chapters").mkdir(parents=True)
    (tmp_path / "book" / "measured").mkdir()
    (tmp_path / "book" / "measured" / "a.json").write_text("{}")
    ch = Chapter("c", "chapters/c", tmp_path / "book" / "chapters" / "c.md")
    deps = execute.dependencies(ch)
    assert tmp_path / "book" / "measured" / "a.json" in deps
    assert any(d.name == "fitted_starts.py" for d in deps)


def test_stderr_warnings_finds_python_warnings_only():
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output
    nb.cells = [
        nbformat.v4.new_code_cell(outputs=[out("stream", name="stderr", text="50%|##  | 1/2\n")]),
        nbformat.v4.new_code_cell(outputs=[out("stream", name="stdout", text="UserWarning: x")]),
        nbformat.v4.new_code_cell(outputs=[out("stream", name="stderr",
                                               text="a.py:3: FutureWarning: old\n  x()\n")]),
    ]
    assert execute.stderr_warnings(nb) == ["cell 2: a.py:3: FutureWarning: old"]


def test_failing_chapter_names_chapter_cell_and_error(tmp_path: Path):
    ch = _chapter(tmp_path, "broken", [("code", "n = 1", ["parameters"]),
                                       ("code", "assert n == 2, 'wrong n'", [])])
    out = tmp_path / "out" / "broken.ipynb"
    with pytest.raises(BookError, match=r"chapter 'broken' .* failed in cell \[3\]: "
                                        r"AssertionError: wrong n") as e:
        execute.execute(ch, {"n": 3}, out, cwd=tmp_path, progress=False)
    assert not out.exists()  # a failed run never looks up to date
    failed = out.with_name("broken.failed.ipynb")
    assert str(failed) in str(e.value)
    nb = nbformat.read(failed, as_version=4)
    assert nb.metadata.papermill.parameters == {"n": 3}
    assert not list(out.parent.glob(".*"))  # no temporary files left


def test_warning_fails_chapter_and_success_is_resumable(tmp_path: Path):
    warns = _chapter(tmp_path, "warns", [("code", "import warnings\nwarnings.warn('careful')",
                                          [])])
    with pytest.raises(BookError, match=r"(?s)'warns' .* printed warnings.*UserWarning: careful"):
        execute.execute(warns, {}, tmp_path / "warns.ipynb", cwd=tmp_path, progress=False)
    ok = _chapter(tmp_path, "ok", [("code", "k = 2", ["parameters"]), ("code", "print(k * 21)",
                                                                        [])])
    first = execute.execute(ok, {"k": 2}, tmp_path / "ok.ipynb", cwd=tmp_path, progress=False,
                            force=False)
    assert not first.skipped and first.seconds > 0
    nb = nbformat.read(first.output, as_version=4)
    assert nb.cells[-1].outputs[0].text == "42\n"
    assert nb.metadata.papermill.input_path == str(ok.source)
    again = execute.execute(ok, {"k": 2}, tmp_path / "ok.ipynb", cwd=tmp_path, force=False)
    assert again.skipped and again.seconds == 0.0


# ============================================================================ prepare


def test_prepare_steps(tmp_path: Path):
    notes: list[str] = []
    (tmp_path / "exists").mkdir()
    make = PrepareStep("made/x.txt", ("python", "-c", "import pathlib; p = pathlib.Path("
                                      "'made'); p.mkdir(); (p / 'x.txt').write_text('1')"))
    prepare.run_steps((PrepareStep("exists", ("false",)),
                       PrepareStep("later", ("false",), requires="semalign3d.no_such_module"),
                       make), tmp_path, notes.append)
    assert (tmp_path / "made" / "x.txt").read_text() == "1"
    assert notes[0] == "prepare: exists exists"
    assert notes[1].startswith("prepare: skipped `false`: semalign3d.no_such_module is not "
                               "available")
    with pytest.raises(BookError, match="prepare step `false` failed with exit code 1"):
        prepare.run_steps((PrepareStep("nope", ("false",)),), tmp_path, notes.append)
    with pytest.raises(BookError, match="succeeded but did not create"):
        prepare.run_steps((PrepareStep("nope", ("true",)),), tmp_path, notes.append)
    assert prepare.argv(make)[0] == sys.executable


# ============================================================================ offline check


def test_html_resources_exact():
    html = """<html><head>
    <script src="https://cdn.example/a.js"></script><script>var x = "https://inline";</script>
    <link rel="stylesheet" href="//fonts.example/c.css"><link rel="canonical" href="https://me">
    <link rel="preload" as="font" href="_static/f.woff2">
    <style>@import "http://x/i.css"; .a { background: url('img.png') }</style></head>
    <body><a href="https://paper">paper</a><img src="local.png" style="b: url(http://y/z.png)">
    </body></html>"""
    assert offline.html_resources(html) == [
        ("<script src>", "https://cdn.example/a.js"),
        ("<link rel=stylesheet>", "//fonts.example/c.css"),
        ("<link rel=preload>", "_static/f.woff2"),
        ("<style> url()", "http://x/i.css"),
        ("<style> url()", "img.png"),
        ("<img src>", "local.png"),
        ("style attribute url()", "http://y/z.png"),
    ]


def test_external_resources_scans_html_and_css(tmp_path: Path):
    (tmp_path / "a.html").write_text('<script src="_static/x.js"></script>')
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "f.css").write_text(
        "@font-face{font-family:x;src:url(https://fonts.example/x.woff2) format('woff2'),"
        "url(../x.woff)}")
    found = offline.external_resources(tmp_path)
    assert found == [offline.ExternalResource(tmp_path / "s" / "f.css", "css url()",
                                              "https://fonts.example/x.woff2")]


# ============================================================================ chapter helpers


def test_table1_differences_match_method_md():
    geo, ours = paper.TABLE1[paper.GEOAWARE], paper.TABLE1[paper.OURS_PAPER]
    diff = {c: round(ours[c] - geo[c], 1) for c in paper.COLUMNS}
    assert diff["chair"] == 14.9 and diff["bottle"] == 11.7 and diff["tvmonitor"] == 10.8
    assert diff["bird"] == -3.2 and diff["boat"] == -3.9 and diff["all"] == 3.3
    cats = paper.COLUMNS[:-1]
    assert round(sum(ours[c] for c in cats) / 18, 2) == 88.88
    assert round(sum(geo[c] for c in cats) / 18, 2) == 85.97
    assert len(paper.TABLE1) == 13 and len(paper.COLUMNS) == 19
    assert paper.SUPERVISION[paper.GEOAWARE] == "S" and paper.SUPERVISION["DIFT"] == "U"


def test_unknowns_name_existing_config_options():
    cfg = Config()
    assert [n for n, _, _ in paper.UNKNOWNS] == list(range(1, 14))
    for _, _, options in paper.UNKNOWNS:
        for option in options:
            functools.reduce(getattr, option.split("."), cfg)  # AttributeError if renamed
    tags = {t.strip() for _, _, ts in paper.SPEC_ITEMS for t in ts.split(",")}
    assert tags <= set(paper.TAGS)


def test_read_results_converts_fractions(tmp_path: Path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "b.json").write_text(json.dumps({"per_image": {"all": 0.5, "cow": 0.25},
                                          "per_keypoint": {"all": 0.75}, "n_pairs": 4,
                                          "n_skipped": 1}))
    (d / "a.json").write_text(json.dumps({"per_image": {"all": 88.9}}))
    a, b = results.read_results(d)
    assert (a.name, a.per_image, a.per_keypoint, a.n_pairs) == ("a", {"all": 88.9}, {}, 0)
    assert b.per_image == {"all": 50.0, "cow": 25.0} and b.per_keypoint == {"all": 75.0}
    assert (b.n_pairs, b.n_skipped) == (4, 1)
    assert results.read_results(tmp_path / "missing") == []
    (d / "c.json").write_text('{"per_image": {"all": "high"}}')
    with pytest.raises(ValueError, match="c.json: 'per_image' must map category names"):
        results.read_results(d)


def test_side_by_side_and_colors():
    from semalign3d.book.plots import keypoint_colors, side_by_side, to_hwc

    a = torch.zeros(3, 2, 3, dtype=torch.uint8)  # [3 x H x W]: H=2, W=3
    b = np.full((4, 1, 3), 7, dtype=np.uint8)  # [H x W x 3]: H=4, W=1
    canvas, off = side_by_side(a, b, gap=2)
    assert canvas.shape == (4, 3 + 2 + 1, 3) and off == 5
    assert canvas[:2, :3].max() == 0 and canvas[2:, :3].min() == 255  # a padded white below
    assert canvas[:, 3:5].min() == 255 and (canvas[:, 5] == 7).all()
    with pytest.raises(ValueError, match="expected a \\[3 x H x W\\] tensor"):
        to_hwc(torch.zeros(2, 2, 3))
    c = keypoint_colors(30)
    assert c.shape == (30, 4) and (c[:, 3] == 1).all()
    assert len({tuple(x) for x in c}) == 30  # distinct colour per SPair id
    np.testing.assert_array_equal(keypoint_colors(5), c[:5])


def test_repo_root_and_resolve(tmp_path: Path):
    assert paths.repo_root(BOOK / "chapters") == REPO
    assert paths.resolve("data/x", REPO) == REPO / "data" / "x"
    assert paths.resolve("/abs/x", REPO) == Path("/abs/x")
    assert paths.resolve("../shared/d", "/r/main") == Path("/r/shared/d")
    fake = tmp_path / "checkout"
    (fake / "semalign3d").mkdir(parents=True)
    (fake / "semalign3d" / "__init__.py").write_text("")
    (fake / "book" / "chapters").mkdir(parents=True)
    assert paths.repo_root(fake / "book" / "chapters") == fake


def test_frame_viewer_validates_and_encodes():
    import matplotlib.pyplot as plt

    from semalign3d.book.widgets import figure_data_url, frame_viewer

    fig, _ = plt.subplots(figsize=(1, 1))
    url = figure_data_url(fig, dpi=10)
    plt.close(fig)
    assert url.startswith("data:image/png;base64,iVBOR")
    w = frame_viewer([url, url], ["a", "b"], title="t", index=1)
    assert (w.index, w.labels, w.title, len(w.frames)) == (1, ["a", "b"], "t", 2)
    with pytest.raises(ValueError, match="at least one frame"):
        frame_viewer([])
    with pytest.raises(ValueError, match="2 frames but 1 labels"):
        frame_viewer([url, url], ["a"])
    with pytest.raises(ValueError, match="index 2 outside 0..1"):
        frame_viewer([url, url], index=2)


# ============================================================================ CLI and tools


def _cli(argv: list[str]) -> argparse.Namespace:
    from semalign3d.commands import book

    parser = argparse.ArgumentParser()
    book.add_arguments(parser)
    return parser.parse_args(argv)


def test_book_command_parses_and_reports_errors(capsys):
    from semalign3d.commands import book

    a = _cli(["run", "02_data", "-p", "category", "chair", "-p", "n_images", "3",
              "--profile", "tiny"])
    assert (a.book_command, a.chapter, a.parameter, a.profile) == (
        "run", "02_data", [["category", "chair"], ["n_images", "3"]], "tiny")
    assert book.run(_cli(["check", "--book", str(BOOK)])) == 0
    assert "matches the" in capsys.readouterr().out
    assert book.run(_cli(["run", "02_data", "--book", str(BOOK), "-p", "categry", "x"])) == 1
    assert "unknown parameter 'categry' (did you mean 'category'?)" in capsys.readouterr().err
    assert book.run(_cli(["build", "--book", str(BOOK), "--chapters", "99_nope"])) == 1
    assert "unknown chapter '99_nope'" in capsys.readouterr().err


def test_screenshot_tool_keeps_action_order():
    tool = _load(BOOK / "tools" / "screenshot.py", "book_screenshot")
    a = tool.parse_args(["site", "p.html", "o.png", "--shot", "a.png", "--press", "input",
                         "ArrowRight", "3", "--text", ".lbl", "--set", "input", "5"])
    assert a.actions == [
        {"kind": "shot", "path": "a.png"},
        {"kind": "press", "selector": "input", "key": "ArrowRight", "times": 3},
        {"kind": "text", "selector": ".lbl"},
        {"kind": "set", "selector": "input", "value": "5"},
    ]


def test_dedupe_scripts_extension_keeps_first_of_each():
    ext = _load(BOOK / "_ext" / "dedupe_scripts.py", "dedupe_scripts")

    class JS:
        def __init__(self, filename, **attributes):
            self.filename, self.attributes = filename, attributes

    scripts = [JS(None, body="const A = 1"), JS("x.js"), JS("", body="const A = 1"),
               JS("x.js", defer="defer"), JS("x.js")]
    context = {"script_files": scripts}
    ext.dedupe(None, "p", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[1], scripts[3]]


def test_anywidget_folder_follows_the_python_package():
    from semalign3d.book import vendor

    assert vendor.anywidget_dir("0.11.0") == "widgets/anywidget@~0.11.*/dist"
    with pytest.raises(BookError, match="pins anywidget 0.12.1 but the Python package asks"):
        vendor.anywidget_dir("0.12.1")


def test_config_yml_keeps_the_offline_settings():
    cfg = yaml.safe_load((BOOK / "_config.yml").read_text())
    sphinx = cfg["sphinx"]["config"]
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert sphinx["html_static_path"] == ["_static_vendor/static"]  # never "_static" (JB1)
    assert not re.match(r"https?://", sphinx["mathjax_path"])
    assert set(sphinx["nb_ipywidgets_js"]) == {"require.js", "embed-amd.js"}
