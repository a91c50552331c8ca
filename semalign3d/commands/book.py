"""``semalign3d book``: execute chapters with papermill and build the offline HTML book.

::

    semalign3d book build [--profile default|tiny] [--chapters 02_data ...] [--force]
    semalign3d book run 02_data -p category chair [--profile tiny] [--out DIR]
    semalign3d book check

``build`` (1) makes the profile's data (``prepare`` in ``book/params.yaml``), (2) executes every
chapter that is not up to date into ``book/_executed/<profile>/``, (3) vendors the JavaScript
from npm and (4) runs Jupyter Book with warnings as errors on the executed copies into
``book/_build/html`` (``book/_build/html-<profile>`` for other profiles), then prints the time
per chapter and the path of ``index.html``. ``run`` re-executes one chapter with
parameter overrides and keeps the copy per parameter set
(``book/_executed/<profile>/02_data__category=chair.ipynb``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--book", default="book", help="the book folder (default: ./book)")
    common.add_argument("--profile", default="default",
                        help="parameter profile of book/params.yaml (default, tiny, ...)")
    sub = parser.add_subparsers(dest="book_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", parents=[common], help="execute all chapters, build the HTML",
                       description="Make the profile's data, execute every chapter with "
                       "papermill (skipping up-to-date ones) and build the offline HTML book.")
    b.add_argument("--chapters", nargs="+", metavar="NAME",
                   help="only these chapters (the HTML then holds only them)")
    b.add_argument("--force", action="store_true", help="re-execute up-to-date chapters too")
    b.add_argument("--no-html", action="store_true", help="execute the chapters only")

    r = sub.add_parser("run", parents=[common], help="re-execute one chapter with parameters",
                       description="Execute one chapter with papermill, with the profile's "
                       "parameters and the given overrides, keeping one copy per parameter set.")
    r.add_argument("chapter", help="chapter name (e.g. 02_data) or its file")
    r.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="override a parameter (YAML value)")
    r.add_argument("--out", help="folder of the executed copy (default: book/_executed/PROFILE)")

    sub.add_parser("check", parents=[common], help="check params.yaml against the chapters")


def run(args: argparse.Namespace) -> int:
    from semalign3d.book.toc import BookError

    action = {"build": _build, "run": _run_one, "check": _check}[args.book_command]
    try:
        return action(args)
    except BookError as e:
        print(f"semalign3d book {args.book_command}: error: {e}", file=sys.stderr)
        return 1


def _load(args: argparse.Namespace):
    """(book folder, chapters, per-chapter parameter specs, resolved profile), all checked."""
    from semalign3d.book import params, toc

    book_dir = Path(args.book).resolve()
    if not (book_dir / "_toc.yml").is_file():
        raise toc.BookError(f"{book_dir}: not a book folder (no _toc.yml); run from the "
                            "repository root or pass --book")
    chapters = toc.chapters(book_dir)
    specs = {c.name: params.chapter_parameters(c) for c in chapters}
    params_file = book_dir / "params.yaml"
    raw = params.read_params(params_file)
    params.validate(raw, specs, str(params_file))
    return book_dir, chapters, specs, params.profile(raw, args.profile, str(params_file))


def _check(args: argparse.Namespace) -> int:
    book_dir, chapters, specs, _ = _load(args)
    for c in chapters:
        print(f"{c.name:24s} {len(specs[c.name])} parameters  {c.source.relative_to(book_dir)}")
    print(f"{book_dir / 'params.yaml'} matches the {len(chapters)} chapters")
    return 0


def _run_one(args: argparse.Namespace) -> int:
    from semalign3d.book import execute, params, prepare, toc

    book_dir, chapters, specs, prof = _load(args)
    (chapter,) = toc.select(chapters, [args.chapter])
    overrides = {name: params.parse_value(value) for name, value in args.parameter}
    params.check_overrides(chapter.name, specs[chapter.name], overrides)
    prepare.run_steps(prof.prepare, book_dir.parent)
    out_dir = Path(args.out) if args.out else book_dir / "_executed" / prof.name
    output = out_dir / execute.output_name(chapter.name, overrides)
    result = execute.execute(chapter, prof.parameters(chapter.name) | overrides, output,
                             cwd=book_dir.parent)
    print(f"{chapter.name}: executed in {result.seconds:.1f} s -> {result.output}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from semalign3d.book import execute, prepare, site, toc, vendor

    book_dir, chapters, _, prof = _load(args)
    root = book_dir.parent
    selected = toc.select(chapters, args.chapters)
    prepare.run_steps(prof.prepare, root)

    executed_dir = book_dir / "_executed" / prof.name
    timings: list[tuple[str, float | None, str]] = []
    done: dict[str, Path] = {}
    failures: list[str] = []
    for ch in selected:
        print(f"chapter {ch.name} ({prof.name})", flush=True)
        try:
            r = execute.execute(ch, prof.parameters(ch.name),
                                executed_dir / execute.output_name(ch.name), cwd=root,
                                force=args.force)
        except toc.BookError as e:
            failures.append(str(e))
            timings.append((ch.name, None, "FAILED"))
            continue
        done[ch.name] = r.output
        timings.append((ch.name, r.seconds, "up to date" if r.skipped else "executed"))

    html = None
    if not failures and not args.no_html:
        t0 = time.perf_counter()
        vendor_dir = vendor.vendor(book_dir, book_dir / "_static_vendor", site.page_dirs(book_dir))
        work = book_dir / "_build" / "work" / prof.name
        staging = site.stage(book_dir, work / "src", chapters, done, vendor_dir)
        html = site.build_html(staging, work, site.site_dir(book_dir, prof.name))
        timings.append(("html (jupyter-book)", time.perf_counter() - t0, "built"))

    print(f"\n{'step':24s} {'seconds':>8s}  status")
    for name, seconds, status in timings:
        print(f"{name:24s} {'-' if seconds is None else f'{seconds:.1f}':>8s}  {status}")
    if failures:
        print(f"\n{len(failures)} chapter(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    if html is not None:
        print(f"\nbook: {html / 'index.html'}")
    return 0
