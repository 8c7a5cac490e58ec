"""The progress bar of `keyledger replay` (rich), on standard error and only on a terminal."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class EventRate(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = f"{task.speed:,.0f}" if task.speed else "…"
        return Text(f"{rate} events/s", style="progress.data.speed")


def progress_bar(quiet: bool) -> Progress:
    """On standard error, and only on a terminal: piped output and tests stay clean."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("replaying the log"),
        BarColumn(),
        MofNCompleteColumn(),
        EventRate(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )
