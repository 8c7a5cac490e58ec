"""docs/benchmarks.md (the table between its markers) and docs/benchmarks.png, from a full run."""

from pathlib import Path

from bench.harness import ROOT, Figure

START, END = "<!-- results:start -->", "<!-- results:end -->"
PAGE = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def table(figures: list[Figure], environment: dict) -> str:
    lines = [
        f"Measured {environment['at'][:16]} UTC on {environment['cores']} cores, PostgreSQL "
        f"{environment['postgresql']}, Python {environment['python']}; each figure the median of its runs.",
        "",
        "| benchmark | figure | value | baseline (same run) | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        baseline = f"{f.baseline_name}: {_number(f.baseline_value)}" if f.baseline_name else "—"
        met = "—" if f.met is None else ("yes" if f.met else "**no**")
        ratio = "—" if f.ratio is None else f"{f.ratio:.2f}"
        lines.append(
            f"| {f.benchmark} | {f.name} | {_number(f.value)} {f.unit} | {baseline} | {ratio} | {f.goal} | {met} |"
        )
    return "\n".join(lines)


def chart(figures: list[Figure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [f for f in figures if f.ratio is not None]
    fig, axis = plt.subplots(figsize=(9, 0.5 * len(compared) + 1.5))
    labels = [f"{f.benchmark}: {f.name}" for f in compared]
    axis.barh(
        labels,
        [f.ratio for f in compared],
        color=["#2a9d8f" if f.met is not False else "#e76f51" for f in compared],
    )
    for row, f in enumerate(compared):
        axis.text(
            f.ratio,
            row,
            f"  {f.ratio:.2f} ({_number(f.value)} / {_number(f.baseline_value)} {f.unit})",
            va="center",
            fontsize=8,
        )
    axis.axvline(1.0, color="grey", linewidth=0.8)
    axis.set_xlim(0, max(f.ratio for f in compared) * 1.6)  # room for the labels
    axis.invert_yaxis()
    axis.set_xlabel("ratio to the baseline measured in the same run")
    axis.set_title("keyledger against its baselines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(figures: list[Figure], environment: dict) -> None:
    page = PAGE.read_text() if PAGE.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    before, _, rest = page.partition(START)
    _, _, after = rest.partition(END)
    PAGE.write_text(
        f"{before}{START}\n{table(figures, environment)}\n\n![ratios](benchmarks.png)\n{END}{after}"
    )
    chart(figures, CHART)
