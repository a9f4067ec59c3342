"""The ``deepmine`` command: one typer app, one error path for every command.

Each package owns its commands: a module ``<package>/cli/<name>_cmd.py`` exposing
``register(app)``. The app finds them through :data:`COMMANDS`, a table of module *names*
(strings, not imports: ``deepmine.inference`` imports no other deepmine package), resolved when
the app is built. Command modules import their heavy dependencies (torch, onnx, LensCrafter's
kernels) inside the command functions, so ``deepmine --help`` stays fast and torch-free. Errors meant for the user
(:class:`~deepmine.inference.errors.DeepmineError`, click usage errors, unreadable files) are
printed as one line ``deepmine <command>: error: <message>`` with a non-zero exit and no
traceback; ``--debug`` (or ``DEEPMINE_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

import typer

from ..errors import DeepmineError


def _click_exceptions():
    """Click's exception classes as typer raises them (recent typer vendors click as
    ``typer._click``; older ones use click itself)."""
    click_exc = typer.BadParameter.__mro__
    base = next(c for c in click_exc if c.__name__ == "ClickException")
    mod = sys.modules[base.__module__]
    return base, mod.Exit if hasattr(mod, "Exit") else typer.Exit, mod.Abort if hasattr(mod, "Abort") else typer.Abort


ClickException, ClickExit, ClickAbort = _click_exceptions()

#: command name → the module that registers it (in ``deepmine --help`` order).
COMMANDS = {
    "demo": "deepmine.lenscrafter.cli.demo_cmd",
    "craft": "deepmine.lenscrafter.cli.craft_cmd",
    "scan": "deepmine.inference.cli.scan_cmd",
    "rank": "deepmine.inference.cli.rank_cmd",
    "selection": "deepmine.lenscrafter.cli.selection_cmd",
    "inspect": "deepmine.inference.cli.inspect_cmd",
    "train": "deepmine.training.cli.train_cmd",
    "export": "deepmine.export.cli.export_cmd",
    "generate": "deepmine.inference.cli.generate_cmd",
    "info": "deepmine.inference.cli.info_cmd",
    "bench": "deepmine.inference.cli.bench_cmd",
}

_app = typer.Typer(
    name="deepmine",
    help="Mine rare objects (strong gravitational lenses first) in survey imaging.\n\n"
    "Craft lenses (LensCrafter), train classifiers (torch, `deepmine[train]`), export them to "
    "ONNX, scan survey cutouts without torch, rank candidates, measure selection functions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"deepmine {__version__}")
        raise typer.Exit(0)


@_app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Mine rare objects in survey imaging."""
    if debug:
        os.environ["DEEPMINE_DEBUG"] = "1"


_registered: set[str] = set()


def _register(names) -> None:
    """Import the modules of the commands ``names`` and add their commands to the app (once each)."""
    for name in names:
        modname = COMMANDS[name]
        if modname in _registered:
            continue
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:  # command not built yet
                continue
            raise
        module.register(_app)
        _registered.add(modname)


def _register_all() -> None:
    _register(COMMANDS)


def __getattr__(name: str):
    """``app``: the typer app with every command registered (for tests and tools that walk it).

    :func:`main` registers only the command it runs (importing the other command modules costs
    ~0.1–0.3 s of start-up), or every command for ``deepmine --help`` and unknown words.
    """
    if name == "app":
        _register_all()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command_word(argv: list[str]) -> str | None:
    words = [a for a in argv if not a.startswith("-")][:1]
    return words[0] if words and words[0] in COMMANDS else None


def _command_path(argv: list[str], command) -> str:
    word = _command_word(argv)
    return f"deepmine {word}" if word and word in getattr(command, "commands", {}) else "deepmine"


def app_command_names() -> set[str]:
    """Names of every command of the app."""
    _register_all()
    cmd = typer.main.get_command(_app)
    return set(getattr(cmd, "commands", {}).keys())


def _one_line(message: str) -> str:
    lines = [ln.strip() for ln in str(message).strip().splitlines() if ln.strip()]
    return " ".join(lines) if lines else "unknown error"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return (and, as a console script, exit with) the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DEEPMINE_DEBUG") == "1"
    word = _command_word(argv)
    _register([word] if word else COMMANDS)
    command = typer.main.get_command(_app)
    where = _command_path(argv, command)
    try:
        rv = command.main(args=argv, prog_name="deepmine", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except (ClickExit, typer.Exit) as exc:
        code = exc.exit_code
    except (ClickAbort, typer.Abort):
        print(f"{where}: aborted", file=sys.stderr)
        code = 130
    except ClickException as exc:  # usage errors, bad parameters, missing options
        if type(exc).__name__ == "NoArgsIsHelpError":  # help was printed
            return 0
        if debug:
            raise
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            where = ctx.command_path
        print(f"{where}: error: {_one_line(exc.format_message())} (see '{where} --help')", file=sys.stderr)
        code = exc.exit_code
    except DeepmineError as exc:
        if debug:
            raise
        print(f"{where}: error: {_one_line(str(exc))}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print(f"{where}: interrupted; completed work is kept (rerun with --resume where offered)", file=sys.stderr)
        code = 130
    except MemoryError:
        if debug:
            raise
        print(f"{where}: error: out of memory; use a smaller --batch-size or fewer threads", file=sys.stderr)
        code = 1
    except OSError as exc:
        if debug:
            raise
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{where}: error: {name}{exc.strerror or _one_line(str(exc))}", file=sys.stderr)
        code = 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        if debug:
            raise
        print(
            f"{where}: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        code = 1
    return int(code or 0)


def run() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
