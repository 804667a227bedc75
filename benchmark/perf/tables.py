"""BENCHMARKS.md's tables, rendered from the measurements they show, so that a figure and its source cannot disagree.

A measurement is a JSON file in docs/measurements/: when and where it was taken, the commands, and what those
commands wrote (`perf ... --json` lines, or a sweep's report/summary.json), verbatim. BENCHMARKS.md marks each
rendered table:

    <!-- table: docs/measurements/training-feed.json -->
    | ... the rendered table ... |
    <!-- end table -->

`python -m benchmark perf tables` (or `python -m benchmark.perf.tables`) rewrites the marked tables from
their files; `--check` only compares (the tests run it).
`python -m benchmark perf tables --record NAME --kind KIND --command CMD [--command CMD ...] FILE ...` makes a
measurement file from what the commands wrote (FILE: JSON or JSON lines; `-` reads standard input).
Reads JSON only: nothing here imports TensorFlow.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path

from benchmark.errors import UserError
from benchmark.runs.rundir import atomic_write_text, git_commit

ROOT = Path(__file__).resolve().parents[2]
DOC = "BENCHMARKS.md"
MEASUREMENTS = "docs/measurements"
BLOCK = re.compile(r"(<!-- table: (?P<src>\S+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)
NAMES = {"resnet34": "ResNet34", "resnet50": "ResNet50", "resnet101": "ResNet101", "densenet121": "DenseNet121",
         "densenet169": "DenseNet169", "mobilenet": "MobileNet", "efficientnetb0": "EfficientNetB0",
         "convnext_tiny": "ConvNeXt-T", "vit_b16": "ViT-B/16"}


def _name(backbone: str) -> str:
    return NAMES.get(backbone, backbone)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3f}"


def render_default_run(record: dict) -> str:
    """The sweep's runs as its report summarised them (report/summary.json): one row per backbone."""
    summary = record["summary"]
    ref = summary["reference"]
    rows = []
    for r in summary["runs"]:
        auroc = f"{r['test_auroc_macro']:.3f} ({r['test_auroc_macro_ci_low']:.3f}–{r['test_auroc_macro_ci_high']:.3f})"
        if r["run"] == ref:
            versus = "reference"
        else:
            versus = f"{r['vs_reference_diff']:+.3f}, p {_p(r['vs_reference_p_holm'])}"
        rows.append([_name(r["backbone"]), _minutes(r["train_seconds"]), auroc, versus, f"{r['params'] / 1e6:.1f} M",
                     f"{r['flops'] / 1e9:.2f}", f"{r['train_images_per_s']:.1f}", f"{r['inference_ms_per_image']:.1f}"])
    table = _table(["backbone", "training", "test mean AUROC (95 % CI)", "against the reference (Δ, Holm p)",
                    "parameters", "GFLOPs / image", "train images/s", "inference ms/image"], rows)
    if "wall_seconds" in record:  # measured around the command, with the folders' sizes after it
        disk = record.get("disk_mb", {})
        table += (f"\nThe whole command: {_minutes(record['wall_seconds'])}; the run folders {disk.get('runs', '?')} MB, "
                  f"the report {disk.get('report', '?')} MB. Reference (chosen on {summary['reference_chosen_on']}): "
                  f"{_name(ref)}.\n")
    return table


def render_training_feed(record: dict) -> str:
    """`perf train` lines: images/s fed by the real pipeline against one in-memory batch repeated."""
    rows = [[_name(r["backbone"]), r.get("engine", "tensorflow"), f"{r['pipeline']:.1f}", f"{r['in_memory']:.1f}",
             f"{100 * r['pipeline_vs_in_memory']:.0f} %"] for r in record["results"]]
    return _table(["backbone", "engine", "pipeline", "in memory", "ratio"], rows)


def render_report_timing(record: dict) -> str:
    """`perf report` lines: the report of a fabricated sweep, its time and peak memory."""
    rows = [[str(r["runs"]), f"{r['images']:,}", f"{r['patients']:,}", str(r["labels"]), str(r["resamples"]),
             str(r["comparisons"]), f"{r['seconds']:.1f} s", f"{r['peak_mb']:.0f} MB"] for r in record["results"]]
    return _table(["runs", "test images", "patients", "labels", "resamples", "comparisons", "time", "peak memory"], rows)


RENDERERS = {"default-run": render_default_run, "training-feed": render_training_feed,
             "report-timing": render_report_timing}


def render(record: dict) -> str:
    kind = record.get("kind")
    if kind not in RENDERERS:
        raise UserError(f"measurement kind {kind!r} has no table; known: {', '.join(RENDERERS)}")
    return RENDERERS[kind](record)


def load(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable measurement ({e}); make it with `perf tables --record`") from None
    missing = [k for k in ("kind", "measured", "machine", "commands") if k not in record]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)}; a measurement says what, when, where and how")
    return record


def rendered(text: str, root: Path = ROOT) -> str:
    """BENCHMARKS.md's text with every marked table rendered again from its measurement."""
    def one(m: re.Match) -> str:
        return m.group(1) + render(load(root / m.group("src"))) + m.group(4)
    return BLOCK.sub(one, text)


def sources(text: str) -> list[str]:
    return [m.group("src") for m in BLOCK.finditer(text)]


def tables(check: bool, root: Path = ROOT) -> list[str]:
    """The marked tables that differ from their measurements; rewritten unless `check`."""
    doc = root / DOC
    text = doc.read_text()
    new = rendered(text, root)
    stale = [src for src, old, now in zip(sources(text), BLOCK.finditer(text), BLOCK.finditer(new))
             if old.group("body") != now.group("body")]
    if stale and not check:
        atomic_write_text(doc, new)
    return stale


def machine() -> str:
    """What the measurement ran on, in words: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GB"
    except (OSError, ValueError):
        memory = ""
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _read_outputs(files: list[str], stdin) -> list:
    out = []
    for f in files:
        text = stdin.read() if f == "-" else Path(f).read_text()
        try:
            out.append(json.loads(text))
        except ValueError:
            out.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return out


def record(name: str, kind: str, commands: list[str], files: list[str], note: str | None, stdin=None,
           root: Path = ROOT, extra: dict | None = None) -> Path:
    """docs/measurements/NAME.json from what the commands wrote; refuses to replace an existing measurement."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--record {name!r}: a plain file name (letters, digits, . _ -), written to {MEASUREMENTS}/")
    if kind not in RENDERERS:
        raise UserError(f"--kind {kind!r} has no table; known: {', '.join(RENDERERS)}")
    outputs = _read_outputs(files, stdin)
    commit = (git_commit() or "")[:7] or None  # the checkout the measuring commands ran from
    body = {"summary": outputs[0]} if kind == "default-run" else {"results": outputs}
    rec = {"kind": kind, "measured": datetime.date.today().isoformat(), "machine": machine(), "commit": commit,
           "commands": commands, **({"note": note} if note else {}), **(extra or {}), **body}
    try:
        render(rec)  # a record its table cannot show is refused before it is written
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise UserError(f"{', '.join(files)}: not what --kind {kind} tables show (lacks or misreads {e}); pass the "
                        f"command's --json output") from None
    path = root / MEASUREMENTS / f"{name}.json"
    if path.exists():
        raise UserError(f"{path} exists; measurements are not replaced: pick another NAME or remove it by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rec, indent=1) + "\n")
    return path


def add_arguments(ap) -> None:
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a table differs")
    ap.add_argument("--record", metavar="NAME", help="write docs/measurements/NAME.json from FILE(s)")
    ap.add_argument("--kind", choices=sorted(RENDERERS))
    ap.add_argument("--command", action="append", default=[], help="a command that produced FILE (repeatable)")
    ap.add_argument("--note")
    ap.add_argument("files", nargs="*", metavar="FILE", help="what the commands wrote (JSON or JSON lines; - for stdin)")


def run(args) -> int:
    import sys

    if args.record:
        if not (args.kind and args.command and args.files):
            raise UserError("--record needs --kind, at least one --command and the FILE(s) the commands wrote")
        print(record(args.record, args.kind, args.command, args.files, args.note, stdin=sys.stdin))
        return 0
    stale = tables(args.check)
    for src in stale:
        print(f"{DOC}: the table from {src} {'differs from it' if args.check else 'rendered again'}")
    return 1 if stale and args.check else 0


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmark.perf.tables", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
