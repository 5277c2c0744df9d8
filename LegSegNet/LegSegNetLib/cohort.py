"""Cohort outputs of `legsegnet batch`: the per-case tables concatenated, failures, a summary picture that
points at outlying cases, and cohort.json. Needs pandas (and pyarrow for the parquet file)."""
import csv
import json
import os
import platform
import time
from pathlib import Path

from . import __version__
from .midthigh import COLUMNS as MIDTHIGH_COLUMNS
from .outputs import inside
from .qc import KINDS as QC_KINDS
from .statistics import METRICS, STAT_COLUMNS
from .tissues import TISSUES

STAT_KEYS = ["tissue", "label", "leg"] + [c[0] for c in STAT_COLUMNS]
METRIC_KEYS = ["leg"] + [m[0] for m in METRICS]
IDENTIFIER_COLUMNS = ["patient_name", "patient_id", "patient_birth_date", "series_instance_uid"]
MIN_OUTLIER_DEVIATION = 0.05   # an outlier also differs from the median by more than 5 % of it
FAILURE_COLUMNS = ["case_id", "input", "kind", "message"]
# what cohort_summary.png shows (leg "both"): (table, tissue or None, column, title)
SUMMARY = [("statistics", t.short, "volume_cm3", f"{t.short} volume (cm³)") for t in TISSUES] + [
    ("metrics", None, "imat_pct_of_compartment", "IMAT % of muscle compartment"),
    ("metrics", None, "sm_mean_hu", "muscle mean HU"),
]


def write_cohort(outdir, cases, results, settings, started):
    """Write every cohort file for the cases of this run; returns cohort.json's content."""
    outdir = Path(outdir)
    keep = settings.get("keep_identifiers", False)
    finished = sorted((c for c in cases if results.get(c.case_id, {}).get("status") in ("done", "skipped")),
                      key=lambda c: c.case_id)
    stats = case_tables(outdir / "cases", finished, "statistics.csv", STAT_KEYS, keep)
    metrics = case_tables(outdir / "cases", finished, "metrics.csv", METRIC_KEYS, keep)
    _replace(outdir / "cohort_statistics.csv", lambda p: stats.to_csv(p, index=False))
    _replace(outdir / "cohort_metrics.csv", lambda p: metrics.to_csv(p, index=False))
    joined = stats.merge(metrics, on=[c for c in metrics.columns if c not in METRIC_KEYS[1:]], how="left")
    _replace(outdir / "cohort.parquet", lambda p: joined.to_parquet(p, index=False))
    quality = cohort_qc(outdir / "cases", finished, keep)
    _replace(outdir / "cohort_qc.csv", lambda p: quality.to_csv(p, index=False))
    levels = case_tables(outdir / "cases", finished, "midthigh.csv", list(MIDTHIGH_COLUMNS), keep)
    _replace(outdir / "cohort_midthigh.csv", lambda p: levels.to_csv(p, index=False))
    write_failures(outdir, cases, results)
    outliers = summary_values(stats, metrics)
    review = review_first(quality, outliers)
    _replace(outdir / "cohort_summary.png", lambda p: plot_summary(p, outliers, review))
    cohort = cohort_record(cases, results, settings, started, outliers)
    cohort["review_first"] = review
    _replace(outdir / "cohort.json", lambda p: Path(p).write_text(json.dumps(cohort, indent=2, default=str)))
    return cohort


def case_tables(cases_dir, cases, name, columns, keep_identifiers):
    """One case's table after another, each prefixed with its case id (and identifiers when kept)."""
    import pandas as pd
    prefix = ["case_id"] + (IDENTIFIER_COLUMNS if keep_identifiers else [])
    frames = []
    for case in cases:
        frame = pd.read_csv(cases_dir / case.case_id / name)
        front = {"case_id": case.case_id}
        if keep_identifiers:
            front.update({c: case.identifiers.get(c, "") for c in IDENTIFIER_COLUMNS})
        for position, (column, value) in enumerate(front.items()):
            frame.insert(position, column, value)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=prefix + columns)
    return pd.concat(frames, ignore_index=True)


def cohort_qc(cases_dir, cases, keep_identifiers):
    """One row per case from its qc.csv: flagged slices in all and by kind, the worst slice and its reasons."""
    import pandas as pd
    rows = []
    for case in cases:
        frame = pd.read_csv(cases_dir / case.case_id / "qc.csv", keep_default_na=False)
        flagged = frame[frame["flags"] != ""]
        kinds = flagged["flags"].str.split(";")
        worst = flagged.sort_values("review_rank").head(1)
        row = {"case_id": case.case_id}
        if keep_identifiers:
            row.update({c: case.identifiers.get(c, "") for c in IDENTIFIER_COLUMNS})
        row.update(slices=len(frame), flagged_slices=len(flagged),
                   **{kind: int(sum(kind in k for k in kinds)) for kind in QC_KINDS},
                   max_score=float(flagged["score"].astype(float).max()) if len(flagged) else 0.0,
                   worst_slice=int(worst["slice"].iloc[0]) if len(worst) else "",
                   worst_reasons=worst["reasons"].iloc[0] if len(worst) else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["case_id", "slices", "flagged_slices", *QC_KINDS,
                                                          "max_score", "worst_slice", "worst_reasons"])


def review_first(quality, panels, limit=10):
    """Cases to open first: the highest slice-QC score first (then more flagged slices), then cases that are
    outliers of the summary panels without a flag."""
    flagged = quality[quality["flagged_slices"] > 0].sort_values(["max_score", "flagged_slices", "case_id"],
                                                                 ascending=[False, False, True])
    order = [{"case_id": r.case_id, "why": f"{r.flagged_slices} flagged slices; worst slice {r.worst_slice}: "
              f"{r.worst_reasons}"} for r in flagged.itertuples()]
    named = {o["case_id"] for o in order}
    for panel in panels:
        for case in panel["outliers"]:
            if case not in named:
                named.add(case)
                order.append({"case_id": case, "why": f"outlier of {panel['title']}"})
    return order[:limit]


def write_failures(outdir, cases, results):
    """failures.csv, and failures/<case_id>.txt with the traceback of each bug; a trace file is deleted only
    when the failures.csv it replaces (an earlier run's) lists that case as a bug: never a file we did not write."""
    earlier_bugs = _earlier_bugs(outdir / "failures.csv")

    def write(path):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, FAILURE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for case in cases:
                result = results.get(case.case_id)
                if result and result["status"] == "failed":
                    writer.writerow(result)
    _replace(outdir / "failures.csv", write)
    traces = outdir / "failures"
    for case in cases:
        result = results.get(case.case_id) or {}
        trace_file = inside(traces / f"{case.case_id}.txt", outdir)
        if result.get("traceback"):
            traces.mkdir(exist_ok=True)
            trace_file.write_text(result["traceback"])
        elif case.case_id in earlier_bugs and trace_file.is_file():   # fixed since: about this run only
            trace_file.unlink()


def _earlier_bugs(failures_csv):
    try:
        with open(failures_csv, newline="") as f:
            return {row.get("case_id") for row in csv.DictReader(f) if row.get("kind") == "error"}
    except (OSError, csv.Error, UnicodeDecodeError):
        return set()


def summary_values(stats, metrics):
    """Per summary panel: every case's value (leg 'both') and the outlying cases (Tukey fences, 1.5 × IQR)."""
    panels = []
    for table, tissue, column, title in SUMMARY:
        frame = stats[(stats["tissue"] == tissue) & (stats["leg"] == "both")] if table == "statistics" \
            else metrics[metrics["leg"] == "both"]
        values = frame[["case_id", column]].dropna()
        panels.append({"title": title, "column": column, "tissue": tissue,
                       "values": dict(zip(values["case_id"], values[column].astype(float))),
                       "outliers": outlying(dict(zip(values["case_id"], values[column].astype(float))))})
    return panels


def outlying(values, whisker=1.5, min_deviation=MIN_OUTLIER_DEVIATION):
    """Case ids whose value lies beyond the Tukey fences and differs from the median by more than min_deviation
    of it (near-identical cases give an IQR near zero, whose fences would flag trivial differences; Tukey needs
    four cases to mean anything)."""
    import numpy as np
    if len(values) < 4:
        return []
    q1, median, q3 = np.percentile(list(values.values()), [25, 50, 75])
    low, high = q1 - whisker * (q3 - q1), q3 + whisker * (q3 - q1)
    return sorted(case for case, v in values.items()
                  if (v < low or v > high) and abs(v - median) > min_deviation * abs(median))


def plot_summary(path, panels, review=()):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    rng = np.random.default_rng(0)     # fixed jitter: the same cohort gives the same picture
    new_api = tuple(int(v) for v in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    horizontal = {"orientation": "horizontal"} if new_api else {"vert": False}
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=10)
        values = list(panel["values"].values())
        if not values:
            ax.text(0.5, 0.5, "no finished case", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        ax.boxplot(values, widths=0.5, showfliers=False, **horizontal)
        jitter = 1 + rng.uniform(-0.15, 0.15, len(values))
        outliers = set(panel["outliers"])
        colours = ["tab:red" if case in outliers else "tab:blue" for case in panel["values"]]
        ax.scatter(values, jitter, s=14, c=colours, zorder=3)
        for (case, value), y in zip(panel["values"].items(), jitter):
            if case in outliers:
                ax.annotate(case, (value, y), xytext=(3, 6), textcoords="offset points", fontsize=7,
                            color="tab:red")
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    n = max((len(p["values"]) for p in panels), default=0)
    fig.suptitle(f"LegSegNet cohort: {n} cases, both legs (outlying cases in red, labelled)", fontsize=11)
    names = ", ".join(r["case_id"] for r in review[:6]) or "none (no flagged slice, no outlier)"
    fig.text(0.01, 0.005, f"review first: {names}", fontsize=9, color="tab:red" if review else "black")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def cohort_record(cases, results, settings, started, panels):
    counts = {status: sum(r.get("status") == status for r in results.values()) for status in ("done", "skipped",
                                                                                           "failed")}
    counts["cases"] = len(cases)
    counts["not_run"] = len(cases) - len(results)
    counts["retried_after_worker_death"] = sum(1 for r in results.values() if r.get("worker_deaths"))
    loads = {}
    for r in results.values():       # each worker process counts its own model loads
        if "engine_loads" in r:
            loads[r["worker"]] = max(loads.get(r["worker"], 0), r["engine_loads"])
    engine = next((r["engine"] for r in results.values() if "engine" in r), None)
    ran = [r for r in results.values() if r.get("status") == "done"]
    return {
        "legsegnet_version": __version__, "versions": _versions(), "settings": settings, "engine": engine,
        "counts": counts,
        "timings": {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                    "wall_s": time.time() - started,
                    "engine_s": sum(r.get("engine_s", 0.0) for r in ran),
                    "task_s": sum(r.get("task_s", 0.0) for r in results.values())},
        "workers": len(loads), "model_loads": sum(loads.values()),
        "outliers": {p["title"]: p["outliers"] for p in panels},
        "cases": [{"case_id": c.case_id, "input": c.input,
                   **{k: v for k, v in results.get(c.case_id, {"status": "not_run"}).items()
                      if k in ("status", "kind", "worker_deaths", "engine_s", "task_s", "worker")}}
                  for c in cases],
    }


def _versions():
    import dask
    import distributed
    import numpy
    import pandas
    return {"python": platform.python_version(), "dask": dask.__version__, "distributed": distributed.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__}


def _replace(path, write):
    """Write through a temporary file and rename, so an interrupted run never leaves half a cohort file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
