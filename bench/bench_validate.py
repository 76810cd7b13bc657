"""How fast is validation: in-process, as a CLI, against openssl and a bare cryptography script.

a. ``validate_files`` in-process on a typical set (RSA-2048 leaf, one intermediate, root)
   and on a set whose CA file holds 150 other roots before the real one, against the
   checks Harper's documentation shows, as openssl processes: ``x509 -text``, ``verify``,
   the modulus comparison (``x509 -modulus | md5`` vs ``rsa -modulus | md5``) and
   ``x509 -checkend`` (target: in-process at least 50x faster).  The private-key load is
   timed apart: cryptography validates an RSA private key when it loads it.
b. ``harper-certd validate`` as a fresh process against ``bench/minimal_validate.py``
   (target: at most 1.3x its wall time), with ``-X importtime`` figures.  Both run twice:
   with the environment as it is, and with a bytecode cache (``PYTHONPYCACHEPREFIX`` in a
   temporary folder, ``PYTHONDONTWRITEBYTECODE`` unset), as a regular install would have.

Measured through ``python -m bench`` (``bench/suite.py``).  Reports only: nothing here
asserts a time.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives import serialization

from harper_certd import devca, judge
from harper_certd.roles import Purpose, SetPaths
from harper_certd.validate import read_set, validate, validate_files

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "validate.json"
MINIMAL = BENCH_DIR / "minimal_validate.py"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
STRANGER_ROOTS = 150
CHECKEND_SECONDS = 30 * 86400  # the validator's default expires_soon window
TARGET_IN_PROCESS = 50.0  # at least this many times faster than the openssl pipeline
TARGET_CLI = 1.3  # at most this many times the bare script's wall time
PROCESS_RUNS = 20


# --- the sets ---------------------------------------------------------------------------------


def make_sets(folder: Path) -> dict[str, SetPaths]:
    """The typical set and the same set with 150 stranger roots ahead of its root."""
    root = devca.make_ca("bench root", key=devca.make_key("rsa", 2048))
    intermediate = devca.make_ca(
        "bench intermediate", parent=root, key=devca.make_key("rsa", 2048), path_length=0
    )
    leaf = devca.make_leaf(intermediate, "nodea", key=devca.make_key("rsa", 2048))
    typical = devca.write_set(folder / "typical", leaf, [root], chain=[intermediate])
    # Real CA bundles hold distinct keys; a pool of 8 keeps generation short and changes
    # nothing for the validator, which parses and fingerprints every entry.
    pool = [devca.make_key("rsa", 2048) for _ in range(8)]
    strangers = [
        devca.make_ca(f"bench stranger root {i:03d}", key=pool[i % len(pool)])
        for i in range(STRANGER_ROOTS)
    ]
    many = devca.write_set(folder / "many_roots", leaf, [*strangers, root], chain=[intermediate])
    return {"typical": typical, f"{STRANGER_ROOTS}_roots": many}


# --- timing helpers ---------------------------------------------------------------------------


def median_seconds(
    run: Callable[[], object], *, min_runs: int, min_seconds: float = 0.0, max_runs: int = 5000
) -> tuple[float, int]:
    """Median wall time of ``run`` over at least ``min_runs`` runs (and ``min_seconds``)."""
    run()  # warm-up: page cache, imports, lazily built tables
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_runs and (
        len(times) < min_runs or time.perf_counter() - started < min_seconds
    ):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def interleaved_medians(
    commands: Mapping[str, Sequence[str]], *, runs: int, cwd: Path, env: Mapping[str, str]
) -> dict[str, float]:
    """Median wall time of each command as a fresh process, runs interleaved against drift."""
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(2):  # warm-up: page cache, and the bytecode cache when there is one
        for argv in commands.values():
            subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    for _ in range(runs):
        for name, argv in commands.items():
            t0 = time.perf_counter()
            subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


# --- a. in-process against the openssl pipeline -----------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineVerdicts:
    x509_text: bool
    verify: bool
    modulus_match: bool
    checkend: bool


PIPELINE_PROCESSES = 7


def _pipe(first: Sequence[str], second: Sequence[str]) -> bytes:
    """``first | second`` without a shell."""
    with subprocess.Popen(first, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as producer:
        consumer = subprocess.run(second, stdin=producer.stdout, capture_output=True, check=False)
        if producer.stdout is not None:
            producer.stdout.close()
    return consumer.stdout


def openssl_pipeline(paths: SetPaths) -> PipelineVerdicts:
    """The checks of Harper's documentation, one openssl process each (7 processes)."""
    cert, key, ca = str(paths.cert), str(paths.key), str(paths.ca)

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([OPENSSL, *args], capture_output=True, check=False)

    text = run("x509", "-in", cert, "-noout", "-text")
    verify = run("verify", "-CAfile", ca, "-untrusted", cert, cert)
    cert_modulus = _pipe([OPENSSL, "x509", "-noout", "-modulus", "-in", cert], [OPENSSL, "md5"])
    key_modulus = _pipe([OPENSSL, "rsa", "-noout", "-modulus", "-in", key], [OPENSSL, "md5"])
    checkend = run("x509", "-checkend", str(CHECKEND_SECONDS), "-noout", "-in", cert)
    return PipelineVerdicts(
        x509_text=text.returncode == 0,
        verify=verify.returncode == 0 and verify.stdout.strip().endswith(b": OK"),
        modulus_match=bool(cert_modulus.strip()) and cert_modulus == key_modulus,
        checkend=checkend.returncode == 0,
    )


@dataclass(frozen=True, slots=True)
class InProcessResult:
    set: str
    in_process_median_s: float
    in_process_runs: int
    validator_valid: bool
    validator_codes: list[str]
    openssl_pipeline_median_s: float
    openssl_pipeline_runs: int
    openssl_pipeline_processes: int
    openssl_verdicts: PipelineVerdicts
    ratio: float
    target_ratio_at_least: float
    meets_target: bool
    # Where the in-process time goes: loading the RSA private key, which cryptography
    # validates (primality of p and q...) unless told unsafe_skip_rsa_key_validation.
    key_load_median_s: float
    key_load_unchecked_median_s: float
    without_key_median_s: float  # validate() of the same files with no key to load
    ratio_without_key_validation: float  # pipeline / (without_key + unchecked key load)


def bench_in_process(name: str, paths: SetPaths, pipeline_runs: int) -> InProcessResult:
    at = dt.datetime.now(dt.UTC)
    key_pem = paths.key.read_bytes()

    def in_process() -> object:
        return validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=judge.MODEL)

    def load_key() -> object:
        return serialization.load_pem_private_key(key_pem, password=None)

    def load_key_unchecked() -> object:
        return serialization.load_pem_private_key(
            key_pem, password=None, unsafe_skip_rsa_key_validation=True
        )

    def without_key() -> object:
        inputs = read_set(paths)._replace(key=None)
        return validate(inputs, at=at, judge=judge.MODEL)

    report = validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=judge.MODEL)
    in_median, in_runs = median_seconds(in_process, min_runs=50, min_seconds=1.0)
    no_key_median, _ = median_seconds(without_key, min_runs=50, min_seconds=0.5)
    key_median, _ = median_seconds(load_key, min_runs=30, min_seconds=0.5)
    unchecked_median, _ = median_seconds(load_key_unchecked, min_runs=200, min_seconds=0.2)
    verdicts = openssl_pipeline(paths)
    pipe_median, pipe_runs = median_seconds(lambda: openssl_pipeline(paths), min_runs=pipeline_runs)
    ratio = pipe_median / in_median
    return InProcessResult(
        set=name,
        in_process_median_s=in_median,
        in_process_runs=in_runs,
        validator_valid=report.valid,
        validator_codes=list(report.codes),
        openssl_pipeline_median_s=pipe_median,
        openssl_pipeline_runs=pipe_runs,
        openssl_pipeline_processes=PIPELINE_PROCESSES,
        openssl_verdicts=verdicts,
        ratio=ratio,
        target_ratio_at_least=TARGET_IN_PROCESS,
        meets_target=ratio >= TARGET_IN_PROCESS,
        key_load_median_s=key_median,
        key_load_unchecked_median_s=unchecked_median,
        without_key_median_s=no_key_median,
        ratio_without_key_validation=pipe_median / (no_key_median + unchecked_median),
    )


# --- b. the CLI against a bare cryptography script --------------------------------------------

CLI = "harper-certd validate"
PYTHON_M = "python -m harper_certd validate"
BARE = "minimal cryptography script"
FLOOR = "python -c pass"


def console_script() -> Path | None:
    """The installed ``harper-certd`` next to this interpreter (not a pyenv/asdf shim)."""
    candidate = Path(sys.executable).parent / "harper-certd"
    return candidate if candidate.exists() else None


def _validate_args(paths: SetPaths) -> list[str]:
    return ["validate", "--cert", str(paths.cert), "--key", str(paths.key), "--ca", str(paths.ca)]


def cli_commands(paths: SetPaths) -> dict[str, list[str]]:
    script = console_script()
    cli = [str(script)] if script is not None else [sys.executable, "-m", "harper_certd"]
    return {
        CLI: [*cli, *_validate_args(paths)],
        PYTHON_M: [sys.executable, "-m", "harper_certd", *_validate_args(paths)],
        BARE: [sys.executable, str(MINIMAL), str(paths.cert), str(paths.key), str(paths.ca)],
        FLOOR: [sys.executable, "-c", "pass"],
    }


def environments(pycache: Path) -> dict[str, dict[str, str]]:
    """The environment as given, and one with a bytecode cache outside the source tree."""
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(pycache)
    return {"as configured": dict(os.environ), "bytecode cached": cached}


@dataclass(frozen=True, slots=True)
class ImportRow:
    module: str
    self_us: int
    cumulative_us: int


@dataclass(frozen=True, slots=True)
class ImportReport:
    runs: int
    cli_total_us: int  # sum of the top-level imports' cumulative times
    bare_total_us: int
    cli_only_modules: int
    cli_only_self_us: int  # self time of every module the bare script does not import
    top_level_only_in_cli: list[ImportRow]
    harper_certd_modules: list[ImportRow]
    heaviest_only_in_cli: list[ImportRow]


ImportTimes = dict[str, tuple[int, int, int]]  # module -> (self us, cumulative us, depth)


def _importtime_once(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> ImportTimes:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    out: ImportTimes = {}
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, raw = line.removeprefix("import time:").split("|", 2)
        raw = raw[1:]  # the separator's space; the rest is two spaces per nesting level
        depth = (len(raw) - len(raw.lstrip(" "))) // 2
        out.setdefault(raw.strip(), (int(self_us), int(cumulative_us), depth))
    return out


def _median_times(samples: list[ImportTimes]) -> ImportTimes:
    names = {name for sample in samples for name in sample}
    out: ImportTimes = {}
    for name in names:
        seen = [sample[name] for sample in samples if name in sample]
        out[name] = (
            int(statistics.median(s for s, _, _ in seen)),
            int(statistics.median(c for _, c, _ in seen)),
            seen[0][2],
        )
    return out


def import_report(paths: SetPaths, cwd: Path, env: Mapping[str, str], runs: int) -> ImportReport:
    """What ``python -m harper_certd validate`` imports that the bare script does not."""
    cli_argv = ["-m", "harper_certd", *_validate_args(paths)]
    bare_argv = [str(MINIMAL), str(paths.cert), str(paths.key), str(paths.ca)]
    cli_samples: list[ImportTimes] = []
    bare_samples: list[ImportTimes] = []
    for _ in range(runs):  # interleaved, as the wall times
        cli_samples.append(_importtime_once(cli_argv, cwd, env))
        bare_samples.append(_importtime_once(bare_argv, cwd, env))
    cli, bare = _median_times(cli_samples), _median_times(bare_samples)

    def total(times: ImportTimes) -> int:
        return sum(c for _, c, d in times.values() if d == 0)

    def rows(items: list[tuple[str, tuple[int, int, int]]]) -> list[ImportRow]:
        return [ImportRow(name, s, c) for name, (s, c, _) in items]

    only = {name: t for name, t in cli.items() if name not in bare}
    # Top-level imports the bare script lacks: their cumulative time is the CLI's extra.
    outermost = [(name, t) for name, t in only.items() if t[2] == 0]
    ours = [(name, t) for name, t in cli.items() if name.startswith("harper_certd")]
    return ImportReport(
        runs=runs,
        cli_total_us=total(cli),
        bare_total_us=total(bare),
        cli_only_modules=len(only),
        cli_only_self_us=sum(s for s, _, _ in only.values()),
        top_level_only_in_cli=rows(sorted(outermost, key=lambda i: -i[1][1])[:15]),
        harper_certd_modules=rows(sorted(ours, key=lambda i: -i[1][1])),
        heaviest_only_in_cli=rows(sorted(only.items(), key=lambda i: -i[1][0])[:20]),
    )


@dataclass(frozen=True, slots=True)
class CliResult:
    environment: str
    runs: int
    commands: dict[str, list[str]]
    medians_s: dict[str, float]
    exit_codes: dict[str, int]
    ratio: float
    ratio_python_m: float
    ratio_above_interpreter: float  # (CLI - python -c pass) / (bare - python -c pass)
    target_ratio_at_most: float
    meets_target: bool
    imports: ImportReport


def bench_cli(
    name: str, paths: SetPaths, runs: int, cwd: Path, env: Mapping[str, str]
) -> CliResult:
    commands = cli_commands(paths)
    exits = {
        label: subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False).returncode
        for label, argv in commands.items()
    }
    medians = interleaved_medians(commands, runs=runs, cwd=cwd, env=env)
    floor = medians[FLOOR]
    ratio = medians[CLI] / medians[BARE]
    return CliResult(
        environment=name,
        runs=runs,
        commands=commands,
        medians_s=medians,
        exit_codes=exits,
        ratio=ratio,
        ratio_python_m=medians[PYTHON_M] / medians[BARE],
        ratio_above_interpreter=(medians[CLI] - floor) / (medians[BARE] - floor),
        target_ratio_at_most=TARGET_CLI,
        meets_target=ratio <= TARGET_CLI,
        imports=import_report(paths, cwd, env, runs=11),
    )


# --- report -----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(rows: list[InProcessResult], clis: list[CliResult]) -> list[str]:
    lines = [
        f"a. in-process validate_files vs the openssl pipeline ({PIPELINE_PROCESSES} processes), "
        "medians",
        f"   {'set':<11}{'in-process':>12}{'openssl':>12}{'ratio':>8}  {'RSA key load':>13}"
        f"{'no key':>11}{'ratio, key unchecked':>22}",
    ]
    for r in rows:
        lines.append(
            f"   {r.set:<11}{_ms(r.in_process_median_s):>12}{_ms(r.openssl_pipeline_median_s):>12}"
            f"{r.ratio:>7.1f}x  {_ms(r.key_load_median_s):>13}{_ms(r.without_key_median_s):>11}"
            f"{r.ratio_without_key_validation:>21.1f}x"
        )
    lines.append(
        f"   target >= {TARGET_IN_PROCESS:g}x: "
        + ", ".join(f"{r.set} {_met(r.meets_target)}" for r in rows)
    )
    for cli in clis:
        lines.append(
            f"b. fresh processes ({cli.environment}), median of {cli.runs} interleaved runs"
        )
        for label, seconds in cli.medians_s.items():
            lines.append(f"   {label:<34}{_ms(seconds):>12}   exit {cli.exit_codes[label]}")
        lines.append(
            f"   {CLI} / {BARE}: {cli.ratio:.2f}x (python -m: {cli.ratio_python_m:.2f}x; "
            f"above the interpreter: {cli.ratio_above_interpreter:.2f}x)  "
            f"target <= {TARGET_CLI:g}x: {_met(cli.meets_target)}"
        )
        imp = cli.imports
        lines.append(
            f"   -X importtime (median of {imp.runs}): CLI {imp.cli_total_us / 1000:.1f} ms, "
            f"bare {imp.bare_total_us / 1000:.1f} ms; {imp.cli_only_modules} modules only in "
            f"the CLI ({imp.cli_only_self_us / 1000:.1f} ms self); top level, cumulative:"
        )
        for row in imp.top_level_only_in_cli[:5]:
            lines.append(f"     {row.module:<36}{row.cumulative_us / 1000:7.1f} ms")
    return lines


def environment() -> dict[str, str]:
    openssl = subprocess.run([OPENSSL, "version"], capture_output=True, text=True, check=False)
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "cryptography": cryptography.__version__,
        "openssl_cli": openssl.stdout.strip(),
        "platform": platform.platform(),
        "cpus": str(len(os.sched_getaffinity(0))),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }
