"""`twin campaign ...` and `twin parameters`: Monte Carlo campaigns on Dask.

    twin campaign run FILE [--cases N] [--workers K] [--scheduler ADDR] [--out DIR]
    twin campaign resume DIR      fly only the missing or failed cases
    twin campaign rerun DIR CASE  one case again, exactly, as a full mission with a report
    twin campaign report DIR      success rate, margins, ellipses: Markdown and PNGs
    twin parameters               every dispersible parameter, its nominal value and range

docs/campaign.md describes the campaign file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
from rich.console import Console

from services.cli.output import Column, Grid, show
from services.kernel.parameters import ParameterError, check_values, split_path

console = Console()
campaign_app = typer.Typer(
    help="Monte Carlo campaigns: dispersed missions on Dask (docs/campaign.md).",
    no_args_is_help=True)

WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Dask worker processes of the local cluster (one case each at "
    "a time; default: the CPU count). Ignored with --scheduler.")]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Run on this Dask scheduler (tcp://host:8786) instead of a local "
    "cluster.")]


def _default_workers() -> int:
    return os.cpu_count() or 1


def _exit_with(command: Callable[[], int]) -> NoReturn:
    """Run a campaign command; exit with its code, or 2 and the reason when the
    campaign file or directory cannot be used."""
    from services.campaign.spec import CampaignError

    try:
        code = command()
    except CampaignError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@campaign_app.command("run")
def run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="The campaign file (YAML or JSON).")],
    cases: Annotated[int | None, typer.Option(
        "--cases", min=1, help="How many cases (default: the file's).")] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", file_okay=False,
        help="The campaign directory (default: campaigns/<name>).")] = None,
) -> None:
    """Fly a campaign's cases on Dask; one Parquet row per case in --out."""
    from services.campaign.run import run_campaign
    from services.campaign.spec import load_campaign

    _exit_with(lambda: run_campaign(
        file, out or Path("campaigns") / load_campaign(file).name, cases=cases,
        workers=workers or _default_workers(), scheduler=scheduler, console=console))


@campaign_app.command("resume")
def resume(
    directory: Annotated[Path, typer.Argument(file_okay=False, help="A campaign directory.")],
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Fly only the cases of DIR that are missing or did not end ok."""
    from services.campaign.run import resume_campaign

    _exit_with(lambda: resume_campaign(directory, workers=workers or _default_workers(),
                                       scheduler=scheduler, console=console))


@campaign_app.command("rerun")
def rerun(
    directory: Annotated[Path, typer.Argument(file_okay=False, help="A campaign directory.")],
    case: Annotated[int, typer.Argument(min=0, help="The case number.")],
) -> None:
    """Fly one case again, exactly, as a full mission over NATS with a report."""
    from services.campaign.run import rerun_case

    _exit_with(lambda: rerun_case(directory, case, console=console))


@campaign_app.command("report")
def report(
    directory: Annotated[Path, typer.Argument(file_okay=False, help="A campaign directory.")],
) -> None:
    """Success rate, margin percentiles, 3-sigma ellipses: DIR/report/summary.md and PNGs."""
    from services.campaign.run import CampaignDir
    from services.campaign.spec import CampaignError
    from services.campaign.summary import write_report

    def write() -> int:
        cdir = CampaignDir(directory)
        cdir.read_manifest()
        if not cdir.parquet.exists():
            raise CampaignError(f"{cdir.parquet} is missing: the campaign never finished a "
                                f"run; twin campaign resume {directory}")
        for path in write_report(directory):
            console.print(str(path))
        return 0

    _exit_with(write)


def parameters_command() -> None:
    """Every dispersible vehicle parameter: path, nominal value, unit, range."""
    from services.campaign.registry import parameter_table

    rows = [[path, f"{p.nominal:g}", p.unit, f"[{p.low:g}, {p.high:g}]", p.doc]
            for path, p in parameter_table().items()]
    show(console, Grid((Column("path"), Column("nominal", right=True), Column("unit"),
                        Column("range"), Column("what it changes")), rows,
                       title="dispersible parameters (twin run --parameters, campaigns)"))


def read_parameters_file(path: Path) -> dict[str, float]:
    """A ``--parameters`` file: a JSON object of parameter path -> value, each
    checked against the vehicle that declares it."""
    from services.campaign.registry import core_class

    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path} as JSON: {exc}",
                                 param_hint="--parameters") from None
    if not isinstance(raw, dict):
        raise typer.BadParameter(f"{path}: give a JSON object such as "
                                 '{"lander.engine.thrust_scale": 0.98}',
                                 param_hint="--parameters")
    by_vehicle: dict[str, dict[str, float]] = {}
    try:
        for key, value in raw.items():
            vehicle, name = split_path(str(key))
            by_vehicle.setdefault(vehicle, {})[name] = value
        out: dict[str, float] = {}
        for vehicle, values in by_vehicle.items():
            try:
                cls = core_class(vehicle)
            except ModuleNotFoundError:
                raise ParameterError(f"no vehicle {vehicle!r} ({key})") from None
            out |= {f"{vehicle}.{k}": v
                    for k, v in check_values(vehicle, cls.PARAMETERS, values).items()}
    except ParameterError as exc:
        raise typer.BadParameter(f"{path}: {exc} (twin parameters lists them)",
                                 param_hint="--parameters") from None
    return dict(sorted(out.items()))
