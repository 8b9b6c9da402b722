"""Compare a run's regenerated tables and figures with committed references (the CI check).

``results/reference/<name>/`` holds copies of what a run of the config named ``<name>`` made:
the tables (``tables/*.csv``), the aggregates (``statistics/aggregate.csv``), the scorecard
(``scorecard/S1.csv``) and the figures (``figures/*.png``). :func:`check` compares a run with them:

- a table must have the same columns and rows; numbers agree when
  ``|run - reference| <= ATOL + RTOL * |reference|`` (NaN matches NaN); text must be equal once the
  numbers written inside it are compared the same way;
- a figure must have the same size, and the root-mean-square difference of its pixel values
  (0-255, every channel) must be at most ``IMAGE_RMS``.

A fixed seed repeats a run exactly on one machine. Across machines the policies' float32
arithmetic can round differently (other vector units, other kernels), and an evaluation episode
carries that to returns: two 2-core machines of the same kind gave the CI tables up to 1e-6 apart
(relative). ``RTOL`` keeps a 100x margin over that; a change of results (code, seed, library,
setting) moves returns at the percent level and fails. On a mismatch :func:`check` writes
``index.html`` in the diff directory: each differing table with the differing cells (reference
next to regenerated) and each differing figure side by side (reference | regenerated |
difference), and returns a non-zero status.

``refresh`` replaces the references with the run's files, on purpose:
    replication reference refresh --config config/ci.yaml      (or: make reference)
"""

from __future__ import annotations

import html
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

PATTERNS = ("tables/*.csv", "statistics/aggregate.csv", "scorecard/S1.csv", "figures/*.png")
# What a study's committed results add (``refresh --documents``): read by people, not compared
DOCUMENTS = (
    "report.md",
    "tidy.csv",
    "config.yaml",
    "provenance.json",
    "tables/*.md",
    "tables/*.tex",
    "statistics/aggregate.md",
    "scorecard/S1.md",
    "figures/*.pdf",
)
ATOL = 1e-9
RTOL = 1e-4  # cross-machine float32 rounding: up to 1e-6 seen (see above)
IMAGE_RMS = 1.0  # pixel-value RMS (0-255): anti-aliasing noise is well below 1, a moved line far above
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
REFERENCE_ROOT = Path("results") / "reference"


@dataclass
class Mismatch:
    """One file that differs: what differs, and the HTML that shows it."""

    path: str
    summary: str
    html: str = ""


@dataclass
class Report:
    """The outcome of a check: files compared and the mismatches among them."""

    compared: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def reference_files(root: Path, patterns: tuple[str, ...] = PATTERNS) -> list[str]:
    """The files under ``root`` that the check compares (``patterns``), relative to it, sorted."""
    return sorted({str(p.relative_to(root)) for pattern in patterns for p in root.glob(pattern)})


def close(a: float, b: float) -> bool:
    """``a`` (regenerated) agrees with ``b`` (reference) within the tolerances."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):  # an unbounded interval (zero spread, too few seeds) matches only itself
        return a == b
    return abs(a - b) <= ATOL + RTOL * abs(b)


def same_cell(a: object, b: object) -> bool:
    """Two table cells agree: numbers within the tolerances, text equal with its numbers compared alike."""
    fa, fb = _number(a), _number(b)
    if fa is not None and fb is not None:
        return close(fa, fb)
    sa, sb = str(a), str(b)
    if NUMBER.sub("#", sa) != NUMBER.sub("#", sb):
        return False
    return all(close(float(x), float(y)) for x, y in zip(NUMBER.findall(sa), NUMBER.findall(sb), strict=True))


def _number(value: object) -> float | None:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(str(value))
    except ValueError:
        return None


def compare_table(run: Path, ref: Path, name: str) -> Mismatch | None:
    """``None`` when the tables agree, otherwise what differs (as text and as an HTML table)."""
    a, b = pd.read_csv(run, dtype=str, keep_default_na=False), pd.read_csv(ref, dtype=str, keep_default_na=False)
    if list(a.columns) != list(b.columns):
        added, removed = sorted(set(a.columns) - set(b.columns)), sorted(set(b.columns) - set(a.columns))
        return Mismatch(
            name,
            f"columns differ (new: {added}, missing: {removed})",
            _pre(f"reference columns: {list(b.columns)}\nregenerated columns: {list(a.columns)}"),
        )
    if len(a) != len(b):
        return Mismatch(name, f"{len(a)} rows, reference has {len(b)}", _table_html(a, b, set()))
    cells = {(i, c) for i in range(len(a)) for c in a.columns if not same_cell(a.at[i, c], b.at[i, c])}
    if not cells:
        return None
    first = sorted(cells, key=lambda rc: (rc[0], list(a.columns).index(rc[1])))[0]
    summary = (
        f"{len(cells)} cell(s) differ; first: row {first[0] + 1}, column {first[1]}: "
        f"{b.at[first[0], first[1]]!r} -> {a.at[first[0], first[1]]!r}"
    )
    return Mismatch(name, summary, _table_html(a, b, cells))


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.float64)


def compare_image(run: Path, ref: Path, name: str, diff_dir: Path) -> Mismatch | None:
    """``None`` when the figures agree, otherwise the RMS difference and a side-by-side image."""
    a, b = _load_image(run), _load_image(ref)
    if a.shape != b.shape:
        summary = f"size {a.shape[1]}x{a.shape[0]}, reference {b.shape[1]}x{b.shape[0]}"
    else:
        rms = float(np.sqrt(np.mean((a - b) ** 2)))
        if rms <= IMAGE_RMS:
            return None
        summary = f"pixel RMS difference {rms:.2f} > {IMAGE_RMS}"
    side = diff_dir / (name.replace("/", "__") + ".side-by-side.png")
    _side_by_side(b, a, side)
    return Mismatch(
        name,
        summary,
        f'<p>reference | regenerated | difference (amplified)</p><img src="{html.escape(side.name)}" width="100%">',
    )


def _side_by_side(ref: np.ndarray, run: np.ndarray, out: Path) -> None:
    from PIL import Image

    height = max(ref.shape[0], run.shape[0])
    width = max(ref.shape[1], run.shape[1])

    def pad(x: np.ndarray) -> np.ndarray:
        canvas = np.full((height, width, 4), 255.0)
        canvas[: x.shape[0], : x.shape[1]] = x
        return canvas

    r, g = pad(ref), pad(run)
    diff = np.abs(r - g)[..., :3].max(axis=2)
    heat = np.stack(
        [np.full_like(diff, 255.0), 255.0 - np.clip(diff * 8, 0, 255), 255.0 - np.clip(diff * 8, 0, 255)], axis=2
    )
    heat = np.concatenate([heat, np.full((height, width, 1), 255.0)], axis=2)
    gap = np.full((height, 8, 4), 128.0)
    row = np.concatenate([r, gap, g, gap, heat], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row.astype(np.uint8), "RGBA").save(out)


def check(
    run_dir: Path | str, reference_dir: Path | str, diff_dir: Path | str, patterns: tuple[str, ...] = PATTERNS
) -> Report:
    """Compare every reference file with the run's; write ``diff_dir/index.html`` on a mismatch.

    ``patterns``: the files compared (default: the tables and figures); e.g. ``cells/hopper/seed0/**/*.csv``
    compares one cell's tidy results of two runs."""
    run_dir, reference_dir, diff_dir = Path(run_dir), Path(reference_dir), Path(diff_dir)
    expected = reference_files(reference_dir, patterns)
    if not expected and patterns != PATTERNS:
        raise FileNotFoundError(f"no files matching {', '.join(patterns)} under {reference_dir}")
    if not expected:
        raise FileNotFoundError(
            f"no references under {reference_dir}; create them with: "
            f"replication reference refresh --run {run_dir} --reference {reference_dir}"
        )
    if diff_dir.exists():
        shutil.rmtree(diff_dir)
    report = Report()
    for name in expected:
        run, ref = run_dir / name, reference_dir / name
        report.compared.append(name)
        if not run.exists():
            report.mismatches.append(Mismatch(name, "missing from the run"))
            continue
        mismatch = compare_table(run, ref, name) if name.endswith(".csv") else compare_image(run, ref, name, diff_dir)
        if mismatch:
            report.mismatches.append(mismatch)
    for name in sorted(set(reference_files(run_dir, patterns)) - set(expected)):
        report.mismatches.append(Mismatch(name, "made by the run but has no reference"))
    if not report.ok:
        write_html(report, run_dir, reference_dir, diff_dir / "index.html")
    return report


def refresh(run_dir: Path | str, reference_dir: Path | str, documents: bool = False) -> list[str]:
    """Replace the references with the run's files; returns what was written. ``documents``: also the
    report, the tidy results and the other formats of the tables and figures (:data:`DOCUMENTS`).

    The reference's earlier files of these kinds are removed (a table the run no longer makes goes);
    anything else committed beside them (a study's shards, its parity benchmark) is kept."""
    run_dir, reference_dir = Path(run_dir), Path(reference_dir)
    files = reference_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir} has no tables or figures to take as references: run the workflow first")
    if documents:
        files += reference_files(run_dir, DOCUMENTS)
    if reference_dir.exists():
        for name in (*reference_files(reference_dir), *reference_files(reference_dir, DOCUMENTS)):
            (reference_dir / name).unlink()
    for name in files:
        (reference_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / name, reference_dir / name)
    return files


# ---- the diff page ----------------------------------------------------------------------------


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _table_html(run: pd.DataFrame, ref: pd.DataFrame, cells: set[tuple[int, str]]) -> str:
    rows = sorted({i for i, _ in cells}) or list(range(max(len(run), len(ref))))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ref.columns)
    body = []
    for i in rows:
        tds = []
        for c in ref.columns:
            old = ref.at[i, c] if i < len(ref) else ""
            new = run.at[i, c] if i < len(run) and c in run.columns else ""
            if (i, c) in cells or i >= len(ref) or i >= len(run):
                tds.append(
                    f'<td class="bad"><del>{html.escape(str(old))}</del><br><ins>{html.escape(str(new))}</ins></td>'
                )
            else:
                tds.append(f"<td>{html.escape(str(old))}</td>")
        body.append(f"<tr><th>{i + 1}</th>{''.join(tds)}</tr>")
    return f"<table><tr><th>row</th>{head}</tr>{''.join(body)}</table>"


def write_html(report: Report, run_dir: Path, reference_dir: Path, out: Path) -> None:
    items = "".join(f"<h2>{html.escape(m.path)}</h2><p>{html.escape(m.summary)}</p>{m.html}" for m in report.mismatches)
    title = f"Reference check: {len(report.mismatches)} mismatch(es)"
    page = f"""<!doctype html><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 4px}} td.bad{{background:#fee}} del{{color:#a00}} ins{{color:#070}}</style>
<h1>{len(report.mismatches)} of {len(report.compared)} reference files differ</h1>
<p>run: {html.escape(str(run_dir))}; references: {html.escape(str(reference_dir))}.
Tables: <del>reference</del> above <ins>regenerated</ins>; numbers agree within {ATOL:g} + {RTOL:g} x |reference|.
Figures: pixel RMS at most {IMAGE_RMS}.</p>{items}"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)


def directories(config_file: str | None, run: str | None, reference: str | None) -> tuple[Path, Path]:
    """The run's results directory and its reference directory: from the run's config, or as given."""
    if config_file:
        from replication.plan import config
        from replication.plan.workflow import results_dir

        cfg = config.load(config_file)
        return Path(run or results_dir(cfg)), Path(reference or REFERENCE_ROOT / cfg["name"])
    if not (run and reference):
        raise ValueError("give --config, or both --run and --reference")
    return Path(run), Path(reference)
