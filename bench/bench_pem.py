"""How fast is the file reader on the worst inputs it can be given (issue 8 item 4).

Every shape of tests/test_pem_reader.py (many BEGIN lines without END, one huge line, many
tiny blocks, many 254-byte chunks, deep headers, NUL bytes, ...) at the 1 MiB limit, and
the field case's shape at its own size (144 KB: 6.8 s with the old regex), through the
cert, key and CA readers.  Each time is a ratio against reading the same file from disk
(``load.read_bounded``) in the same run, so the figures travel between machines; the
absolute CPU times are kept too.  The issue's bound is 0.1 s in process for any input up to
1 MiB; the worst shape is printed first.

Run from the repository root: ``python -m bench.bench_pem``.  Reports only: nothing here
asserts a time.  Results go to ``bench/results/pem.json``.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from harper_certd import devca, load

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "pem.json"
MiB = 1 << 20
RUNS = 5
BOUND_SECONDS = 0.1


def _fit(unit: bytes, prefix: bytes = b"", size: int = MiB) -> bytes:
    return prefix + unit * ((size - len(prefix)) // len(unit))


def _bad_tail(unit: bytes) -> bytes:
    """1 MiB of ``unit`` lines in a CERTIFICATE block whose last data line holds a '!'."""
    tail = b"A!AA\n-----END CERTIFICATE-----\n"
    return _fit(unit, b"-----BEGIN CERTIFICATE-----\n")[: -10 * len(unit)] + tail


def shapes() -> dict[str, bytes]:
    small = devca.make_self_signed_leaf("w", key=devca.make_key("ed25519")).cert_pem
    begin = b"-----BEGIN CERTIFICATE-----\n"
    return {
        "case 38 as filed (144 KB of BEGIN lines)": b"-----BEGIN X-----\n" * 8000,
        "many BEGIN lines without END": _fit(b"-----BEGIN X-----\n"),
        "one huge line": _fit(b"A"),
        "one huge base64 line after BEGIN": _fit(b"A", begin),
        "many tiny blocks": _fit(b"-----BEGIN A-----\nAAAA\n-----END A-----\n"),
        "many 254-byte chunks": _fit(b"-----BEGIN " + b"A" * 300 + b"-----\n"),
        "254-byte chunks then blanks": _fit(b"A" * 254 + b"   \n"),
        "deep header": _fit(b"Comment: x\n", begin),
        "many blank lines": _fit(b"\n"),
        "many 1-character lines": _fit(b"A\n", begin),
        "many 64-character lines after a blank": _fit(b"A" * 64 + b"\n", begin + b"\n"),
        "NUL bytes": _fit(b"A\x00\n", begin),
        "runs of stripped bytes": _fit(b"A" + b"\x01" * 200 + b"B\n", begin),
        "many END lines": _fit(b"-----END X-----\n"),
        "many colon lines": _fit(b"A:\n", begin),
        "bad character on the last line": _bad_tail(b"AAAA\n"),
        "NUL then text on every line": _bad_tail(b"AAAA\x00x\n"),
        "control byte ending every line": _bad_tail(b"AAAA\x01\n"),
        "many valid certificates": _fit(small),
    }


READERS: dict[str, Callable[..., object]] = {
    "cert": load.parse_certificates,
    "key": load.parse_private_key,
    "ca": load.parse_ca_file,
}


def _best(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.process_time()
        with contextlib.suppress(load.Unreadable):
            fn()
        best = min(best, time.process_time() - start)
    return best


def main() -> int:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape, data in shapes().items():
            path = Path(tmp) / "f.pem"
            path.write_bytes(data)
            read = max(_best(partial(load.read_bounded, path)), 1e-6)
            for role, reader in READERS.items():
                cpu = _best(partial(reader, data, name="F"))
                rows.append(
                    {
                        "shape": shape,
                        "role": role,
                        "bytes": len(data),
                        "cpu_seconds": round(cpu, 5),
                        "read_file_seconds": round(read, 6),
                        "ratio_to_reading_the_file": round(cpu / read, 1),
                    }
                )
    rows.sort(key=lambda r: -float(r["cpu_seconds"]))  # type: ignore[arg-type]
    worst = rows[0]
    print(f"{'cpu s':>8} {'x read':>8}  role  shape")
    for r in rows[:12]:
        print(
            f"{r['cpu_seconds']:8.4f} {r['ratio_to_reading_the_file']:8.1f}  "
            f"{r['role']:4}  {r['shape']}"
        )
    print(
        f"worst: {worst['shape']} ({worst['role']}), {worst['cpu_seconds']} s, "
        f"{worst['ratio_to_reading_the_file']}x reading the file; bound {BOUND_SECONDS} s"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "bound_seconds": BOUND_SECONDS,
                "worst": worst,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
