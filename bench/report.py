"""The report of ``python -m bench``: ``report.md`` and its PNG plots, in one folder.

The page gives, per figure, min / median / max of the per-round ratios and the medians of
both sides in milliseconds; the plots are drawn with matplotlib (the ``bench`` extra, never
a runtime dependency) on the Agg backend (no display needed).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

from bench import bench_harper
from bench.suite import Figure, Soak

TIMELINE = "rotation-timeline.md"  # a three-node rotation timeline, when one was written


@dataclass
class Results:
    quick: bool
    machine: dict[str, str]
    figures: list[Figure] = field(default_factory=list)
    rsa_thousand: str | None = None
    install: dict[str, object] | None = None
    soak: Soak | None = None
    harper: list[bench_harper.Summary] | None = None
    harper_skipped: str | None = None
    idle: dict[str, Any] | None = None
    minutes: float = 0.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f}"


def _ratio(value: float) -> str:
    return f"{value:,.2f}x"


def _met(fig: Figure) -> str:
    if fig.target is None:
        return ""
    bound = ("≥ " if fig.speedup else "≤ ") + _ratio(fig.target)
    return f"{bound}: {'met' if fig.met else 'NOT met'}"


def figure_table(figures: Sequence[Figure]) -> list[str]:
    lines = [
        "| measure | ours (median ms) | baseline (median ms) | ratio min / median / max "
        "| rounds | target | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lo, mid, hi = f.ratio_stats()
        kind = "faster" if f.speedup else "of baseline"
        lines.append(
            f"| {f.name}: {f.ours_label} vs {f.base_label} "
            f"| {_ms(statistics.median(f.ours))} | {_ms(statistics.median(f.base))} "
            f"| {_ratio(lo)} / **{_ratio(mid)}** / {_ratio(hi)} {kind} | {len(f.ratios)} "
            f"| {_met(f)} | {f.note} |"
        )
    return lines


def _plot_ca_sizes(figures: Sequence[Figure], out: Path) -> str | None:
    ours = [f for f in figures if f.section == "validation"]
    minimal = [f for f in figures if f.section == "validation-minimal"]
    if not ours:
        return None
    sizes = [int(f.name.split()[0]) for f in ours]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(sizes, [statistics.median(f.ours) * 1000 for f in ours], "o-", label="validate_files")
    ax.plot(sizes, [statistics.median(f.base) * 1000 for f in ours], "s-",
            label="openssl pipeline (7 processes)")
    if minimal:
        ax.plot(sizes, [statistics.median(f.base) * 1000 for f in minimal], "^-",
                label="minimal cryptography script")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("roots in the CA file")
    ax.set_ylabel("median time per validation (ms)")
    ax.set_title("Validation vs CA-file size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    name = "validation-vs-ca-size.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _plot_ratios(figures: Sequence[Figure], out: Path, name: str, title: str) -> str | None:
    if not figures:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * len(figures)))
    labels = [f"{f.name}" for f in figures]
    mids = [statistics.median(f.ratios) for f in figures]
    lows = [m - min(f.ratios) for m, f in zip(mids, figures, strict=True)]
    highs = [max(f.ratios) - m for m, f in zip(mids, figures, strict=True)]
    ax.barh(labels, mids, xerr=[lows, highs], color="#4c72b0", capsize=4)
    for i, f in enumerate(figures):
        if f.target is not None:
            ax.plot([f.target, f.target], [i - 0.4, i + 0.4], color="#c44e52", lw=2)
    ax.axvline(1.0, color="grey", lw=1, ls="--")
    ax.set_xlabel("ratio to the baseline (median, min-max bars; red: target)")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _plot_soak(soak: Soak, out: Path) -> str:
    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(soak.at, soak.rss_mib, "o-", color="#4c72b0")
    ax1.set_xlabel("rotations")
    ax1.set_ylabel("daemon RSS (MiB)", color="#4c72b0")
    ax2 = ax1.twinx()
    ax2.plot(soak.at, soak.fds, "s--", color="#dd8452")
    ax2.set_ylabel("open fds", color="#dd8452")
    ax1.set_title("RSS and fds over the soak")
    if soak.drop_to_installed:
        ax3.hist([d * 1000 for d in soak.drop_to_installed], bins=30, color="#55a868")
        ax3.axvline(soak.settle * 1000, color="#c44e52", lw=2, label="settle period")
        ax3.set_xlabel("drop -> installed (ms)")
        ax3.set_ylabel("rotations")
        ax3.legend()
        ax3.set_title("Drop -> installed in the daemon")
    fig.tight_layout()
    name = "soak.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def write(results: Results, out: Path) -> Path:
    """Write ``report.md`` and the plots into ``out``; the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    m = results.machine
    figs = results.figures
    lines = [
        "# harper-certd benchmark report",
        "",
        f"Measured {m.get('date (UTC)', '?')} UTC with `python -m bench"
        f"{' --quick' if results.quick else ''}` in {results.minutes:.1f} minutes"
        f"{' (quick mode: small sizes, few rounds, no real Harper)' if results.quick else ''}.",
        "",
        "**Read every figure as a ratio.** Each one is measured against its baseline in the same "
        "run, the two sides alternated round by round; min / median / max are over the rounds. "
        "The machine table gives the load average at the start and the end: absolute "
        "milliseconds move with the load, the ratios much less. Nothing here "
        "is asserted by a test: targets are printed beside the figures, met or not.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in m.items()],
        "",
    ]

    def section(title: str, keys: Sequence[str], text: str, plot: str | None = None) -> None:
        chosen = [f for f in figs if f.section in keys]
        if not chosen:
            return
        lines.extend([f"## {title}", "", text, "", *figure_table(chosen), ""])
        if plot:
            lines.extend([f"![{title}]({plot})", ""])

    ca_plot = _plot_ca_sizes(figs, out)
    section(
        "Validation vs CA-file size",
        ["validation"],
        "`validate_files` in-process (every check of the validator) against the seed's openssl "
        "pipeline: `x509 -text`, `verify -CAfile`, `x509 -modulus | md5` and `rsa -modulus | md5`, "
        "`x509 -checkend` (7 processes). The CA file holds the set's root after n - 1 stranger "
        "EC roots. Ratio: how many times faster ours is.",
        ca_plot,
    )
    section(
        "Validation against a minimal cryptography script",
        ["validation-minimal"],
        "The same sets, against `bench/minimal_validate.py` called in-process (load the three "
        "files, `PolicyBuilder` chain verification, public keys compared, nothing else). "
        "Ratio: how many times faster ours is (the script loads the RSA private key with "
        "cryptography's own key check, which dominates its time).",
    )
    if results.rsa_thousand:
        lines.extend([f"Large RSA CA file: {results.rsa_thousand}.", ""])
    proc_plot = _plot_ratios([f for f in figs if f.section in ("process", "install", "history")],
                             out, "ratios.png", "Processes, install path, history kept")
    section(
        "Process wall time",
        ["process"],
        "Fresh processes, the installed console script, output captured, with a bytecode cache "
        "(as a regular install has). `status --no-probe` "
        "reads the node's files (config, live set, state, folders) without dialling Harper. "
        "In each round each side is the median of three runs (one run a side in `--quick`): "
        "a single fresh process on this 2-core machine varies by half its time.",
    )
    section(
        "The Node judge's cost in-process",
        ["judge"],
        "`validate_files` on the typical set (root + intermediate) judged by Node (one short "
        "`node` process per set, started before the analysis runs, so the two overlap) "
        "against the same call with `judge=judge.MODEL` (the model alone). Every other "
        "in-process validation figure above uses the model alone, named explicitly; the "
        "process rows above name their judge.",
    )
    section(
        "Install path",
        ["install"],
        "`pipeline.install_newest` in this process from the call to the set being installed "
        "(generation written, `current` flipped, journal closed: the clock stops when "
        "`Store.finish` returns; until 2026-12-07 15:00 it stopped at the call's return less "
        "the phases timed as after, which counted the `certd.set_installed` event and the "
        "call's other after-work too: both are given below), against copying the same three "
        "files into a folder on the same file system with an fsync each, a rename each and the "
        "folder fsynced. The page cache is synced (`os.sync`) before each install and each "
        "copy, and each follows a 0.2 s pause. The set "
        "is judged by the model alone (`judge.node: none`): Node's judgement, one short "
        "process per set, is the row of its own above, and adds to this path in the daemon.",
    )
    if results.install is not None:
        phases = results.install.get("phases")
        if isinstance(phases, dict):
            lines.extend([
                "Where the install path's time goes (medians over the installs, this process):",
                "",
                "| phase | ms | fsyncs | of which fsync ms |",
                "|---|---|---|---|",
                *[
                    f"| {name} | {v['median_ms']:,.2f} | {v['fsyncs']:g} | "
                    f"{v['fsync_median_ms']:,.2f} |"
                    for name, v in phases.items()
                ],
                "",
            ])
    section(
        "Install cost vs history kept",
        ["history"],
        "`install_newest` on nodes that keep n lines in `history.jsonl` and n folders in "
        "`processed/` (retention.keep above n), against a node that keeps none; one install on "
        "each node per round.",
        proc_plot,
    )
    section(
        "Drop -> installed vs number of sets",
        ["sets"],
        "The daemon (`harper-certd run`, restart method none, `watch.settle_seconds` 0.1, the "
        "model judging: Node's start-up is its own row above) managing n certificate sets: the "
        "replication set and n - 1 server sets, each with its own CA file, keys folder and "
        "`incoming/<name>/`. All daemons run side by side; each round drops a new replication "
        "set into each one's folder for it, in alternating order, and times the rename to "
        "`certd.set_installed`. Against the daemon managing one set (target: at most 1.5x).",
    )
    if results.idle is not None:
        idle = results.idle
        lines.extend([
            "## Idle daemon",
            "",
            "`harper-certd run` left alone beside a bare Python that imports the same libraries "
            "and watches the same folders (and a second one that also imports harper_certd), "
            "all three over the same window.",
            "",
            "| process | RSS at end MiB | RSS max MiB | CPU s per minute |",
            "|---|---|---|---|",
            *[
                f"| {p['name']} | {p['rss_end_mib']:.1f} | {p['rss_max_mib']:.1f} "
                f"| {p['cpu_seconds_per_minute']:.4f} |"
                for p in idle["processes"]
            ],
            "",
            f"Daemon RSS at end: **{idle['rss_end_ratio']:.2f}x** the bare process's "
            f"(target ≤ 1.30x); {idle['rss_end_ratio_vs_bare_with_harper_certd']:.2f}x the bare "
            "process that also imports harper_certd.",
            "",
        ])
    if results.soak is not None:
        s = results.soak
        d = sorted(s.drop_to_installed)
        lines.extend([
            "## Soak: RSS, fds and drop -> installed over rotations",
            "",
            f"The daemon (`harper-certd run`, restart method none, `watch.settle_seconds` "
            f"{s.settle}) given {s.rotations:,} sets, one after the other, each moved into "
            f"`incoming/` in one rename as soon as the previous one was installed. Each set is "
            f"judged by Node, as shipped (one short `node` process per set: the Node judge "
            f"row above), so drop -> installed is the settle period plus that judgement.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| RSS first sample / last | {s.rss_mib[0]:.1f} MiB / {s.rss_mib[-1]:.1f} MiB |",
            f"| RSS growth, whole soak | {s.rss_mib[-1] - s.rss_mib[0]:+.2f} MiB |",
            f"| RSS growth per 1,000 rotations, second half "
            f"| {s.growth_per_thousand():+.2f} MiB (target < 1 MiB) |",
            "| largest rise between two samples | {:+.2f} MiB, at rotation {:,} |".format(
                *s.largest_step()
            ),
            f"| open fds first / max / last | {s.fds[0]} / {max(s.fds)} / {s.fds[-1]} |",
            f"| sets not installed | {s.refused} |",
        ])
        if d:
            med = statistics.median(d)
            lines.append(
                f"| drop -> installed min / median / max | {_ms(d[0])} / **{_ms(med)}** / "
                f"{_ms(d[-1])} ms; median {med / s.settle:.2f}x the settle period |"
            )
        lines.extend(["", f"![soak]({_plot_soak(s, out)})", ""])
    lines.extend(["## Real Harper: hot reload vs restart", ""])
    if results.harper is None:
        lines.extend([f"Skipped: {results.harper_skipped or 'not run'}.", ""])
    else:
        lines.extend([
            "Harper 4.7.29, one node, a handshake with the replication port every 50 ms; per "
            "method, rotations through `pipeline.install`. Served after: from the call to the "
            "first handshake returning the new leaf.",
            "",
            *bench_harper.table(results.harper),
            "",
        ])
        hot = next((h for h in results.harper if h.method == "hot-reload"), None)
        if hot and hot.served_after_median:
            for h in results.harper:
                if h is not hot and h.served_after_median:
                    slower = h.served_after_median / hot.served_after_median
                    lines.append(
                        f"- {h.method}: served after {slower:.2f}x "
                        f"the hot reload's time, {h.failed_handshakes_median:g} failed handshakes "
                        f"(hot reload: {hot.failed_handshakes_median:g})."
                    )
            lines.append("")
    heading = "## Three-node rotation timeline"
    lines.extend([heading, ""])
    timeline = out / TIMELINE
    if timeline.is_file():  # written with its own heading (tests/test_ca_rotation.py)
        lines.extend([timeline.read_text().strip().removeprefix(heading).strip(), ""])
    else:
        lines.extend([f"Not present: the cluster rotation's timeline is read from `{TIMELINE}` "
                      "beside this report, written by `HARPER_CERTD_TIMELINE=<that file> pytest "
                      "tests/test_ca_rotation.py` (docs/benchmarks.md).", ""])
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)
