"""`python -m services.cli.yamcs_cli` (`./task yamcs`): Yamcs as the twin's
mission control, in the foreground until Ctrl-C.

    ./task yamcs                       web UI on http://127.0.0.1:8090/
    ./task yamcs -- --http-port 8091 --tm-port 11015 --tc-port 11025

The gateway sends its telemetry to the TM port and listens for telecommands on
the TC port; the archive stays in the state dir (.state/yamcs) from one run to
the next. docs/ccsds.md, "Yamcs as mission control", says more.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.kernel.yamcsd import (
    DEFAULT_HTTP_PORT,
    DEFAULT_TC_PORT,
    DEFAULT_TM_PORT,
    YamcsServer,
    YamcsServerError,
)

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = _REPO_ROOT / ".state" / "yamcs"
EXIT_FAILED = 1

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Run Yamcs as the twin's mission control until Ctrl-C.")


@app.command()
def run(
    http_port: Annotated[int, typer.Option(
        "--http-port", min=1, max=65535, help="The web UI and HTTP API.")] = DEFAULT_HTTP_PORT,
    tm_port: Annotated[int, typer.Option(
        "--tm-port", min=1, max=65535, help="UDP port Yamcs receives the gateway's telemetry "
        "on.")] = DEFAULT_TM_PORT,
    tc_host: Annotated[str, typer.Option(
        "--tc-host", help="Where the gateway listens for telecommands.")] = "127.0.0.1",
    tc_port: Annotated[int, typer.Option(
        "--tc-port", min=1, max=65535, help="UDP port the gateway listens for telecommands "
        "on.")] = DEFAULT_TC_PORT,
    host: Annotated[str, typer.Option(
        "--host", help="Address of the web UI; it has no login, so keep it on "
        "loopback unless the network is yours.")] = "127.0.0.1",
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", file_okay=False, help="Configuration, archive and log of the "
        "run.")] = DEFAULT_STATE_DIR,
    mdb: Annotated[Path | None, typer.Option(
        "--mdb", exists=True, dir_okay=False, help="Another XTCE file instead of "
        "deploy/yamcs/mdb/change6.xml.")] = None,
) -> None:
    """Start Yamcs with deploy/yamcs, print where it is, run until Ctrl-C."""
    server = YamcsServer(state_dir, host=host, http_port=http_port, tm_port=tm_port,
                         tc_host=tc_host, tc_port=tc_port, mdb=mdb)
    try:
        code = asyncio.run(_serve(server))
    except YamcsServerError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C or SIGTERM: _serve was cancelled, and leaving its `async with`
        # stopped Yamcs (SIGTERM to it, SIGKILL after the grace).
        console.print("Yamcs stopped.", highlight=False)
        code = 0
    raise typer.Exit(code)


async def _serve(server: YamcsServer) -> int:
    """Run until Ctrl-C (0) or until Yamcs exits on its own (1, with its log)."""
    # SIGTERM (a supervisor, `kill`) stops Yamcs as cleanly as Ctrl-C does;
    # Python's default would exit at once and leave the JVM to die by signal.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    console.print(f"starting Yamcs (log: {server.log_file}) ...", highlight=False)
    async with server:
        for what, where in server.summary():
            console.print(f"  {what:<17} {where}", highlight=False)
        console.print("Yamcs is up; Ctrl-C stops it.", highlight=False)
        code = await server.wait_async()
    err_console.print(f"[bold red]Yamcs exited with code {code}[/bold red]\n"
                      f"{server.log_tail()}", highlight=False)
    return EXIT_FAILED


def main() -> None:
    app()


if __name__ == "__main__":
    main()
