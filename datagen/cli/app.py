"""The ``datagen`` command: the top parser, argument helpers shared by the commands, and error handling.

One module per command group (generate.py: generate/preview/validate, train.py, models.py,
qc.py, vectors.py, canvas.py, export.py) adds its subcommands; none of them imports torch
or another heavy module to build the parser, so ``datagen --help`` answers at once.

Errors caused by user input (:class:`~datagen.errors.DatagenError`) print one line and
exit with status 2, naming the option at fault by its flag (``--num``) where the library
names the parameter (``num``); ``--debug`` shows their traceback. Any other exception is
a bug: its traceback is shown and the status is 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..errors import DatagenError, flag_name
from ..options import DEVICE_HELP, PRECISIONS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer of a closed pipe


# ---- parser helpers shared by the command modules -----------------------------------

class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to every option's help that has a default and does not name one itself."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.nargs == 0 or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


class DatagenParser(argparse.ArgumentParser):
    """ArgumentParser with :class:`HelpFormatter`; its subparsers (of any depth) are DatagenParsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int] | None, help: str,
                **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand: ``help`` is its line in the parent's list and (unless given) its own description;
    ``func(args)`` runs it. The parser is kept in the arguments, so errors can name its flags."""
    kwargs.setdefault("description", help[0].upper() + help[1:] + ("" if help.endswith(("?", ".")) else "."))
    p = sub.add_parser(name, help=help, **kwargs)
    if func is not None:
        p.set_defaults(func=func, command_parser=p)
    return p


def sample_count(text: str) -> int:
    """argparse type of --num: a whole number, also written as 1e6 or 1_000_000."""
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        v = float("nan")
    if v == v and v not in (float("inf"), float("-inf")) and v == int(v):
        return int(v)
    raise argparse.ArgumentTypeError(f"expected a whole number of samples (e.g. 1000 or 1e6), got {text[:40]!r}")


def positive_int(what: str = "a whole number", keyword: str | None = None) -> Callable[[str], int | str]:
    """An argparse type: a whole number >= 1 (``what`` names it in the error), or ``keyword``
    (matched case-insensitively, returned in lower case) where the option also takes a word."""

    def parse(text: str) -> int | str:
        t = text.strip()
        if keyword is not None and t.lower() == keyword:
            return keyword
        try:
            v = int(t)
        except ValueError:
            v = 0
        if v < 1:
            alt = f" or {keyword!r}" if keyword is not None else ""
            raise argparse.ArgumentTypeError(f"expected {what} >= 1{alt}, got {text[:40]!r}")
        return v

    parse.__name__ = "positive_int"  # argparse names the type in some messages
    return parse


def add_trust_pickles(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickles", action="store_true",
                   help="allow a stylegan2: pickle as the model: unpickling runs code from the file, so only use "
                        "pickles you trust (a recipe can also say trust: true)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="arithmetic of the forward passes: auto (float16 on CUDA, float32 on a CPU), fp32, fp16 "
                        "(CUDA), bf16 (bfloat16 on either; 1.13x faster on the demo on a 2-core AVX512-BF16 CPU, "
                        "pixels move by 0.5 levels on average); recorded in the output")


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bar and no summary") -> None:
    p.add_argument("--quiet", action="store_true", help=help)


def build_parser() -> argparse.ArgumentParser:
    from .canvas import add_canvas_command
    from .export import add_export_commands
    from .generate import add_generate_commands
    from .models import add_models_command
    from .qc import add_qc_command
    from .train import add_train_command
    from .studio import add_studio_command
    from .vectors import add_vector_commands

    p = DatagenParser(prog="datagen", description="Annotated segmentation data from activation vectors painted into a GAN.")
    p.add_argument("--version", action="version", version=f"datagen {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks, also of errors in the input")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate_commands(sub)
    add_train_command(sub)
    add_models_command(sub)
    add_qc_command(sub)
    add_vector_commands(sub)
    add_studio_command(sub)
    add_canvas_command(sub)
    add_export_commands(sub)
    return p


# ---- running a command ----------------------------------------------------------------

def flag_namer(parser: argparse.ArgumentParser | None) -> Callable[[str, str], str]:
    """How errors of a command name a parameter: by the flag of the option whose ``dest`` it is
    (``num_tasks`` -> ``--ray-tasks``), a positional by its metavar, others ``--name``."""
    actions = {a.dest: a for a in (parser._actions if parser is not None else [])}

    def namer(name: str, value: str = "") -> str:
        act = actions.get(name)
        if act is not None and not act.option_strings:  # a positional argument
            return str(act.metavar or act.dest).upper()
        flag = None
        if act is not None:
            flag = next((s for s in act.option_strings if s.startswith("--")), act.option_strings[0])
        return flag_name(name, value, flag)

    return namer


def _silence_stdout() -> None:
    """After a broken pipe (``datagen models --json | head -1``): drop whatever stdout still holds."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (tests capture it)
        pass


def main(argv: list[str] | None = None) -> int:
    import errno
    import warnings

    parser = build_parser()
    a = parser.parse_args(argv)
    command_parser = getattr(a, "command_parser", None)
    prog = command_parser.prog if command_parser is not None else f"datagen {a.command}"

    def error(message: str) -> int:
        print(f"{prog}: error: {' '.join(message.splitlines())}", file=sys.stderr)
        return EXIT_USAGE

    fmt = warnings.formatwarning  # show Python warnings (e.g. ClassSeparabilityWarning) as one readable line
    warnings.formatwarning = lambda msg, cat, *_a, **_k: f"{prog}: warning: {msg}\n"
    try:
        rc = int(a.func(a) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return rc
    except KeyboardInterrupt:
        kept = {"train": "a checkpoint was saved", "generate": "completed blocks are kept"}.get(a.command)
        print("\ninterrupted" + (f": {kept}; rerun the same command with --resume to continue" if kept else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except DatagenError as e:
        if a.debug:
            raise
        return error(e.render(flag_namer(command_parser)))
    except RecursionError:
        if a.debug:
            raise
        return error("input nested too deeply to process")
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other command-line tools do
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as e:
        if a.debug or e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        where = f" ({e.filename})" if e.filename else ""
        return error(f"disk full{where}: {e.strerror or e}; free space and run it again"
                     + (" with --resume (completed blocks are kept)" if a.command == "generate" else ""))
    finally:
        warnings.formatwarning = fmt


if __name__ == "__main__":
    sys.exit(main())
