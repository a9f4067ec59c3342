"""``deepmine inspect``: grade the top candidates of a scan in a browser; export the graded ones.

``deepmine inspect CATALOG ...`` is short for ``deepmine inspect serve CATALOG ...``;
``deepmine inspect export GRADES ...`` writes the graded false positives and lenses as cutout
stacks for ``deepmine train --extra-negatives / --extra-positives``.
"""
from __future__ import annotations

import difflib
import getpass
import threading
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from .common import err_console, existing_file, out_console, parse_fraction_or_count


class _ServeByDefault(TyperGroup):
    """A group whose first argument, when it is not a sub-command, is a catalogue to serve."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            if not args[0].startswith("-") and not Path(args[0]).exists():
                close = difflib.get_close_matches(args[0], list(self.commands), n=1)
                if close:
                    ctx.fail(f"no command {args[0]!r} (did you mean {close[0]!r}?) and no catalogue of that name")
            args = ["serve", *args]
        return super().parse_args(ctx, args)


inspect_app = typer.Typer(
    cls=_ServeByDefault,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Grade the top candidates of a scan in a browser, and export the graded ones for "
    "retraining (seed 2.5, 4.7).\n\n`deepmine inspect CATALOG` is short for "
    "`deepmine inspect serve CATALOG`.",
)


def _default_grader() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "grader"


@inspect_app.command("serve")
def serve(
    catalog: Path = typer.Argument(..., help="Scan catalogue (FITS/ECSV/Parquet) with id, source, index, logit.",
                                   show_default=False),
    cutouts: Optional[list[Path]] = typer.Option(
        None, "--cutouts", help="Cutout stacks (.npy / FITS, N×3×H×W) the rows point at; repeat for several "
        "(default: the files named in the source column, beside the catalogue).", show_default=False),
    top: str = typer.Option("0.005", "--top", help="Candidates to show, largest logit first: a count, or a "
                            "fraction: ordinality > 1 - fraction, against the reference pool when the "
                            "catalogue has one (0.005 = the seed's ordinality > 0.995), as scan --top."),
    grades: Optional[Path] = typer.Option(None, "--grades", help="Grades file (ECSV), created or resumed "
                                          "[default: CATALOG.grades.ecsv beside the catalogue].", show_default=False),
    grader: Optional[str] = typer.Option(None, "--grader", help="Your name, recorded with each grade "
                                         "[default: your user name]; the page can change it.", show_default=False),
    port: int = typer.Option(8050, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 lets other machines grade; "
                             "there is no login — the page's session token guards grades — so only on a trusted network)."),
    allow_host: Optional[list[str]] = typer.Option(None, "--allow-host", help="Another name graders use to reach this "
                                                   "server (with --host 0.0.0.0); repeatable. Requests naming any other "
                                                   "Host are refused (DNS rebinding)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser; just print the address."),
) -> None:
    """Serve a local page to view and grade the top candidates: A / B / C (lens grades), N (not a
    lens), X (artefact), U undo, arrows to move. Every grade is saved at once; restarting
    resumes. Stop with Ctrl-C."""
    from ..inspect.app import InspectSession
    from ..inspect.server import make_server, server_url

    existing_file(catalog, "catalogue")
    for c in cutouts or []:
        existing_file(c, "cutout stack")
    session = InspectSession(catalog, cutouts, top=parse_fraction_or_count(top, "--top"), grades=grades,
                             grader=grader or _default_grader())
    server = make_server(session, host, port, allow_hosts=allow_host or ())
    url = server_url(server)
    state = session.state(session.grader)
    err_console.print(
        f"deepmine inspect: {state['total']} candidates of {catalog.name} ({state['graded']} graded by "
        f"{session.grader}); grades → {session.grades_path}"
    )
    out_console.print(f"open {url}   (Ctrl-C to stop)", soft_wrap=True)
    if not no_browser:
        import webbrowser

        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # the normal way to stop a server: every grade is already saved
        pass
    finally:
        server.server_close()
        session.close()
    err_console.print(f"stopped; {len(session.log.actions)} grading actions are in {session.grades_path}")


@inspect_app.command("export")
def export(
    grades: list[Path] = typer.Argument(..., help="Grades file(s) written by 'deepmine inspect' (several "
                                        "graders' files of one catalogue are combined).", show_default=False),
    negatives: Optional[Path] = typer.Option(None, "--negatives", help="Write graded false positives (N, X) "
                                             "here as an N×3×H×W .npy stack.", show_default=False),
    lenses: Optional[Path] = typer.Option(None, "--lenses", help="Write graded lenses (A, B; C with "
                                          "--include-c) here as an N×3×H×W .npy stack.", show_default=False),
    cutouts: Optional[list[Path]] = typer.Option(
        None, "--cutouts", help="Cutout stacks the catalogue rows point at (default: found from the source "
        "column, beside the catalogue).", show_default=False),
    grader: Optional[list[str]] = typer.Option(None, "--grader", help="Use only this grader's grades (repeat "
                                               "for several).", show_default=False),
    include_c: bool = typer.Option(False, "--include-c", help="Count C (possible lens) as a lens; otherwise it "
                                   "is neither a lens nor a negative."),
    agreement: str = typer.Option("majority", "--agreement", help="How graders combine: majority (more than "
                                  "half) or unanimous."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --negatives/--lenses stacks and "
                                   "their .rows.ecsv; a grades file or cutout stack is never written over."),
) -> None:
    """Write the graded false positives and lenses as cutout stacks (same dtype as the sources)
    for `deepmine train ... --extra-negatives fp.npy --extra-positives found.npy`; a
    `<name>.rows.ecsv` beside each lists the catalogue rows it holds."""
    from ..atomic import check_outputs
    from ..inspect.export import export_grades, rows_path

    for g in grades:
        existing_file(g, "grades file")
    for c in cutouts or []:
        existing_file(c, "cutout stack")
    outs = [p for o in (negatives, lenses) if o is not None for p in (o, rows_path(o))]
    check_outputs(outs, [*grades, *(cutouts or [])], overwrite)
    result = export_grades(grades, negatives, lenses, cutouts, grader, include_c, agreement)
    for kind, path, n in (("false positives", negatives, result.n_negatives), ("lenses", lenses, result.n_lenses)):
        if path is None:
            continue
        if n:
            out_console.print(f"wrote {n} {kind} to {path}", soft_wrap=True)
        else:
            err_console.print(f"no graded {kind}: {path} not written")
    if result.n_undecided:
        why = "graders did not agree" + ("" if include_c else ", or C (possible lens; see --include-c)")
        err_console.print(f"{result.n_undecided} graded candidates left out ({agreement}): {why}")


def register(app: typer.Typer) -> None:
    app.add_typer(inspect_app, name="inspect")
