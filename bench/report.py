"""Tables and charts of benchmark rows: Orchy's (bench/orchy_bench.py) and its peers'
(bench/peers/run_peers.py). Standard library only.

A row is a dict like ``{"engine": "celery", "tasks_per_second": 512.3, "latency_ms":
{"p50": 2.1, "p90": 3.0, "p99": 4.2}, "notes": "..."}``; a row whose engine could not be
measured has ``tasks_per_second`` None and says why in ``error`` (``status`` "failed" or
"unavailable").

    median_row(trials) -> dict one engine's trials as one row: the median tasks/s and the
                               median of each latency percentile
    render(rows) -> str        a markdown table, with tasks/s relative to each Orchy row
    chart(rows, path) -> Path  a PNG bar chart (matplotlib from bench/.venvs/report, or,
                               failing that, a plain PNG drawn here with zlib and struct)

    python -m bench.report rows.jsonl [--chart out.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORCHY_PREFIX = "orchy"
MATPLOTLIB_SECONDS = 120.0


def _tps(row: dict[str, Any]) -> float | None:
    value = row.get("tasks_per_second")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _latency(row: dict[str, Any], key: str) -> float | None:
    latency = row.get("latency_ms")
    if not isinstance(latency, dict):
        return None
    value = latency.get(key)
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else None


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def median_row(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One engine's trials as one row: tasks/s is the median trial's, each latency
    percentile the median of the trials' (one slow moment of the machine moves neither).
    The trials' tasks/s are kept in the notes and in ``trials_tasks_per_second``."""
    measured = sorted((row for row in trials if _tps(row) is not None), key=lambda r: _tps(r))
    if not measured:
        return dict(trials[-1])
    row = dict(measured[len(measured) // 2])
    if len(trials) == 1:
        return row
    if isinstance(row.get("latency_ms"), dict):
        latency = {}
        for key in row["latency_ms"]:
            values = [value for trial in measured if (value := _latency(trial, key)) is not None]
            latency[key] = round(statistics.median(values), 3) if values else None
        row["latency_ms"] = latency
    speeds = [trial.get("tasks_per_second") for trial in trials]
    row["trials_tasks_per_second"] = speeds
    trials_note = f"median of {len(measured)} of {len(trials)} trials"
    row["notes"] = "; ".join(part for part in (row.get("notes"), trials_note) if part)
    return row


def baselines(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Orchy rows with a throughput, in the order given."""
    return [
        row
        for row in rows
        if str(row.get("engine", "")).startswith(ORCHY_PREFIX) and _tps(row) is not None
    ]


def render(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: engine, tasks/s, p50 and p99 step latency in ms, and the ratio of the
    row's tasks/s to Orchy's (one column per Orchy row; "—" when there is none). Rows that
    could not be measured say so, with the reason as a note under the table."""
    bases = baselines(rows)
    ratio_headers = [f"tasks/s ÷ {row['engine']}" for row in bases] or ["tasks/s ÷ orchy"]
    header = ["engine", "tasks/s", "p50 step latency (ms)", "p99 step latency (ms)"]
    header += ratio_headers
    lines = [
        "| " + " | ".join(_cell(text) for text in header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    footnotes: list[str] = []
    for row in rows:
        engine = str(row.get("engine", "?"))
        tps = _tps(row)
        if tps is None:
            status = str(row.get("status") or "failed")
            reason = str(row.get("error") or row.get("notes") or "no figures")
            footnotes.append(f"{len(footnotes) + 1}. {engine} {status}: {reason}")
            cells = [engine, f"{status} [{len(footnotes)}]", "—", "—"]
            cells += ["—"] * len(ratio_headers)
        else:
            cells = [engine, _number(tps), _ms(_latency(row, "p50")), _ms(_latency(row, "p99"))]
            base_tps = [_tps(base) for base in bases]
            cells += [f"{tps / value:.2f}x" for value in base_tps if value] or ["—"]
        lines.append("| " + " | ".join(_cell(text) for text in cells) + " |")
    if footnotes:
        lines.append("")
        lines += [_cell(note)[:600] for note in footnotes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The chart


def chart(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write a PNG bar chart of tasks/s and of p50/p99 step latency (log scales; Orchy's rows
    in their own colour). Uses matplotlib in this interpreter if it has it, else in
    bench/.venvs/report (installed by bench/peers/setup.py), else draws a plainer PNG itself."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    plain_rows = [dict(row) for row in rows]
    if importlib.util.find_spec("matplotlib") is not None:
        _draw_matplotlib(plain_rows, target)
        return target
    python = _report_python()
    if python is not None:
        done = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "-", "--matplotlib", str(target)],
            input=json.dumps(plain_rows),
            capture_output=True,
            text=True,
            timeout=MATPLOTLIB_SECONDS,
        )
        if done.returncode == 0 and target.exists():
            return target
        print(f"matplotlib failed, drawing a plain PNG: {done.stderr[-500:]}", file=sys.stderr)
    _draw_plain(plain_rows, target)
    return target


def _report_python() -> Path | None:
    """bench/.venvs/report's python, installing matplotlib there if it is missing."""
    sys.path.insert(0, str(HERE / "peers"))
    try:
        import setup  # bench/peers/setup.py

        return Path(setup.ensure("report"))
    except Exception as exc:
        print(f"no matplotlib venv ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    finally:
        sys.path.remove(str(HERE / "peers"))


ORCHY_COLOUR = "#d9480f"
PEER_COLOUR = "#1c7ed6"
P99_ALPHA = 0.35


def _draw_matplotlib(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    names = [str(row.get("engine", "?")) for row in rows]
    colours = [ORCHY_COLOUR if name.startswith(ORCHY_PREFIX) else PEER_COLOUR for name in names]
    positions = list(range(len(rows)))[::-1]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, 1.2 + 0.55 * len(rows)), sharey=True, layout="constrained"
    )

    tps = [_tps(row) for row in rows]
    left.barh(positions, [value or 0 for value in tps], color=colours)
    left.set_xscale("log")
    left.set_title("user tasks per second (4-step chain, higher is better)")
    measured = [value for value in tps if value]
    if measured:
        left.set_xlim(max(min(measured) / 3, 0.1), max(measured) * 6)
    floor = left.get_xlim()[0]
    for y, value, row in zip(positions, tps, rows, strict=True):
        label = _number(value) if value else str(row.get("status") or "failed")
        left.text(value or floor, y, f" {label}", va="center", fontsize=9)
    left.set_yticks(positions, names)

    p50 = [_latency(row, "p50") for row in rows]
    p99 = [_latency(row, "p99") for row in rows]
    right.barh(
        positions, [value or 0 for value in p99], color=colours, alpha=P99_ALPHA, label="p99"
    )
    right.barh(positions, [value or 0 for value in p50], color=colours, height=0.5, label="p50")
    right.set_xscale("log")
    right.set_title("step k end → step k+1 start, ms (lower is better)")
    for y, low, high in zip(positions, p50, p99, strict=True):
        if low is not None and high is not None:
            right.text(high, y, f" p50 {_ms(low)} / p99 {_ms(high)}", va="center", fontsize=9)
    spread = [value for value in p50 + p99 if value]
    if spread:
        right.set_xlim(min(spread) / 3, max(spread) * 40)
    right.legend(loc="lower right", fontsize=8)
    for axis in (left, right):
        axis.grid(axis="x", which="major", alpha=0.3)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# A plain PNG without matplotlib: zlib + struct, and a 3x5 pixel font.

_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"),
    "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": (".##", "#..", "#..", "#..", ".##"),
    "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"),
    "F": ("###", "#..", "##.", "#..", "#.."),
    "G": (".##", "#..", "#.#", "#.#", ".##"),
    "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"),
    "J": ("..#", "..#", "..#", "#.#", ".#."),
    "K": ("#.#", "#.#", "##.", "#.#", "#.#"),
    "L": ("#..", "#..", "#..", "#..", "###"),
    "M": ("#.#", "###", "###", "#.#", "#.#"),
    "N": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "O": (".#.", "#.#", "#.#", "#.#", ".#."),
    "P": ("##.", "#.#", "##.", "#..", "#.."),
    "Q": (".#.", "#.#", "#.#", "##.", ".##"),
    "R": ("##.", "#.#", "##.", "#.#", "#.#"),
    "S": (".##", "#..", ".#.", "..#", "##."),
    "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"),
    "V": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "W": ("#.#", "#.#", "###", "###", "#.#"),
    "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "Y": ("#.#", "#.#", ".#.", ".#.", ".#."),
    "Z": ("###", "..#", ".#.", "#..", "###"),
    " ": ("...", "...", "...", "...", "..."),
    ".": ("...", "...", "...", "...", ".#."),
    ",": ("...", "...", "...", ".#.", "#.."),
    "-": ("...", "...", "###", "...", "..."),
    "+": ("...", ".#.", "###", ".#.", "..."),
    "=": ("...", "###", "...", "###", "..."),
    "_": ("...", "...", "...", "...", "###"),
    "(": (".#.", "#..", "#..", "#..", ".#."),
    ")": (".#.", "..#", "..#", "..#", ".#."),
    "[": ("##.", "#..", "#..", "#..", "##."),
    "]": (".##", "..#", "..#", "..#", ".##"),
    "/": ("..#", "..#", ".#.", "#..", "#.."),
    ":": ("...", ".#.", "...", ".#.", "..."),
    "%": ("#.#", "..#", ".#.", "#..", "#.#"),
    ">": ("#..", ".#.", "..#", ".#.", "#.."),
    "?": ("###", "..#", ".##", "...", ".#."),
}
_SCALE = 2
_CHAR_WIDTH = 4 * _SCALE
_LINE = 7 * _SCALE
_WHITE = (255, 255, 255)
_BLACK = (33, 37, 41)
_GREY = (222, 226, 230)


def _hex(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(_WHITE) * width * height)

    def rect(self, x: int, y: int, w: int, h: int, colour: tuple[int, int, int]) -> None:
        for row in range(max(y, 0), min(y + h, self.height)):
            start = (row * self.width + max(x, 0)) * 3
            end = (row * self.width + min(x + w, self.width)) * 3
            if end > start:
                self.pixels[start:end] = bytes(colour) * ((end - start) // 3)

    def text(self, x: int, y: int, text: str, colour: tuple[int, int, int] = _BLACK) -> int:
        for char in text.upper():
            glyph = _GLYPHS.get(char, _GLYPHS["?"])
            for gy, line in enumerate(glyph):
                for gx, bit in enumerate(line):
                    if bit == "#":
                        self.rect(x + gx * _SCALE, y + gy * _SCALE, _SCALE, _SCALE, colour)
            x += _CHAR_WIDTH
        return x

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[row * stride : (row + 1) * stride])
            for row in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def _log_fraction(value: float, low: float, high: float) -> float:
    if high <= low:
        return 1.0
    return max(
        0.02, min(1.0, (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low)))
    )


def _draw_plain(rows: list[dict[str, Any]], path: Path) -> None:
    label_width = 28 * _CHAR_WIDTH
    panel = 330
    gap = 200
    margin = 16
    row_height = 2 * _LINE
    width = margin + label_width + panel + gap + panel + gap
    height = margin * 2 + 3 * _LINE + row_height * len(rows)
    canvas = _Canvas(width, height)
    left_x = margin + label_width
    right_x = left_x + panel + gap
    canvas.text(left_x, margin, "user tasks/s (log scale)")
    canvas.text(right_x, margin, "step latency ms p50 (p99) log")
    tps = [_tps(row) for row in rows]
    p50 = [_latency(row, "p50") for row in rows]
    p99 = [_latency(row, "p99") for row in rows]
    measured = [value for value in tps if value]
    spread = [value for value in p50 + p99 if value]
    tps_low, tps_high = (min(measured) / 3, max(measured)) if measured else (1.0, 10.0)
    ms_low, ms_high = (min(spread) / 3, max(spread)) if spread else (0.1, 1.0)
    for index, row in enumerate(rows):
        y = margin + 3 * _LINE + index * row_height
        name = str(row.get("engine", "?"))
        colour = _hex(ORCHY_COLOUR if name.startswith(ORCHY_PREFIX) else PEER_COLOUR)
        canvas.text(margin, y, name[:27])
        value = tps[index]
        if value:
            length = int(panel * _log_fraction(value, tps_low, tps_high))
            canvas.rect(left_x, y - 2, length, _LINE, colour)
            canvas.text(left_x + length + 6, y, _number(value))
        else:
            canvas.text(left_x, y, str(row.get("status") or "failed"))
        low, high = p50[index], p99[index]
        if high:
            length = int(panel * _log_fraction(high, ms_low, ms_high))
            canvas.rect(right_x, y - 2, length, _LINE, _GREY)
        if low:
            length = int(panel * _log_fraction(low, ms_low, ms_high))
            canvas.rect(right_x, y - 2, length, _LINE, colour)
        if low and high:
            end = right_x + int(panel * _log_fraction(high, ms_low, ms_high))
            canvas.text(end + 6, y, f"{_ms(low)} ({_ms(high)})")
    path.write_bytes(canvas.png())


def read_rows(lines: Iterable[str]) -> list[dict[str, Any]]:
    rows = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render benchmark rows (JSON lines).")
    parser.add_argument("rows", help="a file of JSON lines, or - for stdin (a JSON list works)")
    parser.add_argument("--chart", type=Path, help="write a PNG chart here")
    parser.add_argument("--matplotlib", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plain", type=Path, help="write the plain (no matplotlib) PNG here")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.rows == "-" else Path(args.rows).read_text()
    rows = json.loads(text) if text.lstrip().startswith("[") else read_rows(text.splitlines())
    if args.matplotlib:  # what chart() runs inside bench/.venvs/report
        _draw_matplotlib(rows, args.matplotlib)
        return 0
    print(render(rows), end="")
    if args.chart:
        print(f"chart: {chart(rows, args.chart)}", file=sys.stderr)
    if args.plain:
        _draw_plain(rows, args.plain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
