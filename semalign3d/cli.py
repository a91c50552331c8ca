"""The ``semalign3d`` command line.

Each subcommand lives in ``semalign3d/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported lazily so ``--help`` stays fast and importing the
package never loads a model or touches the network.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from semalign3d.data.records import DataError
from semalign3d.process import keep_freed_memory

#: subcommand -> (module, one-line help). The order is the pipeline's.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("semalign3d.commands.data", "generate the synthetic object-class dataset"),
    "features": ("semalign3d.commands.features", "extract and cache descriptor maps"),
    "prior": ("semalign3d.commands.prior", "build a category's 3D object-class representation"),
    "evaluate": ("semalign3d.commands.evaluate", "align test images, match pairs, print PCK"),
    "match": ("semalign3d.commands.match", "align two of your own images and transfer keypoints"),
    "eval-pairs": ("semalign3d.commands.eval_pairs", "score a predictions file with PCK"),
    "book": ("semalign3d.commands.book", "execute book chapters with papermill, build the HTML"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="semalign3d",
        description=(
            "SemAlign3D: semantic keypoint correspondence by aligning a 3D object-class "
            "representation to each image. Run 'semalign3d COMMAND --help' for details."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if command in (None, name):
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), "")
    args = build_parser(command).parse_args(argv)
    keep_freed_memory()
    try:
        return int(args._run(args) or 0)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"semalign3d {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
