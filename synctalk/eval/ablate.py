"""`synctalk ablate SUBJECT --variants configs/ablations/ -o OUT/`: train and evaluate config variants side by side.

Every ``*.yaml`` in the variants folder (sorted by name) is one variant, named after the file stem. A variant file
starts from a base recipe with ``_base_`` (resolved relative to the variant file, e.g. ``_base_: ../cpu.yaml``) and
sets only what it changes. An optional ``evaluate:`` section (not a config key) sets evaluation options of that
variant; today ``evaluate: {portrait: true}`` (evaluate the portrait paste-back at full resolution, which also trains
the portrait stage).

For each variant: train into ``OUT/<variant>/workspace`` (resumable: the trainer skips finished stages), evaluate
into ``OUT/<variant>/report`` (``metrics.json``, ``metrics.md``, ``sheet.png``). A variant whose report exists and
whose recorded config (``provenance.config``) and evaluation options equal the current ones is not run again, so
re-running the command only does what is missing. A workspace trained with another config (e.g. another
``--budget``) is started afresh. A variant that fails with a :class:`~synctalk.errors.SyncTalkError` (an unknown
key, missing weights...) is recorded as skipped with the message; the others still run.

``budget`` scales every variant's schedules alike: ``train.head_steps``, ``lips_steps``, ``torso_steps``,
``mouth_generator_steps``, ``portrait_steps`` (at least 1 when > 0; 0 stays 0) and ``train.budget_minutes`` (when
> 0). ``sync.max_steps`` is not touched.

Outputs: ``OUT/ablation.csv`` and ``OUT/ablation.md`` (a row per variant: the ``render`` row of its metrics.json,
training minutes, rendering frames/s and the keys it changes against its base recipe; the ground-truth lip-sync
scores as a final row; skipped metrics and variants with their reasons under the table) and one bar chart per
metric, ``OUT/charts/<metric>.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from synctalk.errors import ConfigError, SyncTalkError, UserInputError

log = logging.getLogger("synctalk.eval.ablate")

EVALUATE_SECTION = "evaluate"
EVALUATE_KEYS = {"portrait": bool}
SCHEDULE_KEYS = ("head_steps", "lips_steps", "torso_steps", "mouth_generator_steps", "portrait_steps")
# columns of the table, in order; the optional ones only when some variant has a value
METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "lmd", "au_upper", "au_lower", "fid", "lse_d", "lse_c", "offset",
           "syncnet_lse_d", "syncnet_lse_c")
OPTIONAL_METRICS = ("lpips", "fid", "syncnet_lse_d", "syncnet_lse_c")
SPEED = ("train_minutes", "render_fps")
GT_METRICS = ("lse_d", "lse_c", "offset", "syncnet_lse_d", "syncnet_lse_c")
SPEED_LABELS = {"train_minutes": "train min", "render_fps": "render FPS"}
GT_ROW = "ground truth"
VARIANT_RECORD = "variant.json"


@dataclasses.dataclass
class Variant:
    name: str
    path: Path
    cfg: Any = None                   # SyncTalkConfig (budget and overrides applied); None when it failed to load
    portrait: bool = False
    changes: dict = dataclasses.field(default_factory=dict)   # dotted key -> value, against the base recipe
    error: str | None = None


# ------------------------------------------------------------------------------------------------ configs
def scale_schedule(cfg, budget: float):
    """A copy of ``cfg`` with the training schedules scaled by ``budget`` (see the module docstring)."""
    if not (isinstance(budget, int | float) and math.isfinite(budget) and budget > 0):
        raise UserInputError(f"--budget must be a number > 0 (1.0: the recipes' schedules), got {budget!r}")
    train = cfg.train
    changes = {}
    for key in SCHEDULE_KEYS:
        steps = getattr(train, key)
        changes[key] = max(1, int(round(steps * budget))) if steps > 0 else steps
    if train.budget_minutes > 0:
        changes["budget_minutes"] = train.budget_minutes * budget
    return dataclasses.replace(cfg, train=dataclasses.replace(train, **changes))


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_changes(cfg, base) -> dict[str, Any]:
    """Dotted keys whose value in ``cfg`` differs from ``base``."""
    from synctalk.config import config_to_dict

    a, b = flatten(_jsonable(config_to_dict(cfg))), flatten(_jsonable(config_to_dict(base)))
    return {key: value for key, value in a.items() if b.get(key) != value}


def _jsonable(value):
    return json.loads(json.dumps(value))


def _load_with(data: dict, variant_path: Path, overrides: list[str]):
    """load_config of ``data`` as if it were the file ``variant_path`` (its relative ``_base_`` entries stay
    relative to the variant's folder)."""
    from synctalk.config import SyncTalkConfig, load_config
    from synctalk.config.loader import BASE_KEY

    data = dict(data)
    bases = data.get(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{variant_path}: {BASE_KEY} must be a file name or a list of file names")
    resolved = []
    for base in bases:
        path = (variant_path.parent / base).resolve()
        if not path.is_file():
            raise ConfigError(f"{variant_path}: {BASE_KEY} '{base}' not found (looked at {path}); name the base "
                              "recipe relative to the variant file, e.g. _base_: ../cpu.yaml")
        resolved.append(str(path))
    data[BASE_KEY] = resolved
    with tempfile.TemporaryDirectory() as tmp:
        temp = Path(tmp) / variant_path.name
        temp.write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            return load_config(SyncTalkConfig, temp, overrides)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(temp.resolve()), str(variant_path)).replace(
                str(temp), str(variant_path))) from None


def load_variant(path: Path, overrides: list[str], budget: float) -> Variant:
    """Read one variant file: its config (budget and overrides applied), evaluation options and changed keys."""
    from synctalk.config.loader import BASE_KEY

    variant = Variant(path.stem, path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a variant file must be a mapping of keys to values, got {type(data).__name__}")
    options = data.pop(EVALUATE_SECTION, None) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: '{EVALUATE_SECTION}' must be a section, e.g. {EVALUATE_SECTION}: "
                          "{portrait: true}")
    for key, value in options.items():
        if key not in EVALUATE_KEYS:
            raise ConfigError(f"{path}: unknown key '{EVALUATE_SECTION}.{key}'; known: "
                              + ", ".join(f"{EVALUATE_SECTION}.{k}" for k in EVALUATE_KEYS))
        if not isinstance(value, EVALUATE_KEYS[key]):
            raise ConfigError(f"{path}: '{EVALUATE_SECTION}.{key}' must be true or false, got {value!r}")
    variant.portrait = bool(options.get("portrait", False))
    variant.cfg = scale_schedule(_load_with(data, path, overrides), budget)
    base = scale_schedule(_load_with({BASE_KEY: data.get(BASE_KEY, [])}, path, overrides), budget)
    variant.changes = config_changes(variant.cfg, base)
    if variant.portrait:
        variant.changes[f"{EVALUATE_SECTION}.portrait"] = True
    return variant


def find_variants(variants_dir: str | Path) -> list[Path]:
    folder = Path(variants_dir)
    hint = ("put one YAML file per variant there, each starting from a recipe and changing a few keys, e.g. "
            "'_base_: ../cpu.yaml' and 'train: {audio_backend: mel}' (configs/ablations/ has examples)")
    if not folder.is_dir():
        raise UserInputError(f"variants folder {folder} does not exist; {hint}")
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise UserInputError(f"variants folder {folder} has no *.yaml files; {hint}")
    return paths


# ------------------------------------------------------------------------------------------------ running
def _report_is_current(report_dir: Path, variant: Variant, max_frames: int | None) -> dict | None:
    """The variant's metrics.json when it was made with the current config and options, else None."""
    from synctalk.config import config_to_dict

    metrics_path, record_path = report_dir / "metrics.json", report_dir.parent / VARIANT_RECORD
    if not metrics_path.is_file() or not record_path.is_file():
        return None
    try:
        result = json.loads(metrics_path.read_text())
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("provenance", {}).get("config") != _jsonable(config_to_dict(variant.cfg)):
        return None
    if bool(result.get("portrait")) != variant.portrait or record.get("max_frames") != max_frames:
        return None
    if record.get("status") != "ok":
        return None
    return result


def _fresh_workspace(workspace: Path, report_dir: Path, cfg) -> None:
    """Start afresh when the workspace was trained with another config (its finished stages would be reused)."""
    from synctalk.config import SyncTalkConfig, load_config

    saved = workspace / "config.yaml"
    if not saved.is_file():
        return
    try:
        same = load_config(SyncTalkConfig, saved) == cfg
    except SyncTalkError:
        same = False
    if not same:
        log.warning("%s was trained with another config; training it again", workspace)
        shutil.rmtree(workspace)
        shutil.rmtree(report_dir, ignore_errors=True)


def _run_variant(subject: Path, variant: Variant, out: Path, device, max_frames: int | None,
                 progress: bool) -> dict:
    from synctalk.eval.evaluate import EvaluateOptions, evaluate
    from synctalk.runtime import configure_precision, resolve_device
    from synctalk.train.trainer import STAGES, train

    workspace, report_dir = out / "workspace", out / "report"
    cached = _report_is_current(report_dir, variant, max_frames)
    if cached is not None:
        log.info("ablate %s: up to date (%s), skipped", variant.name, report_dir / "metrics.json")
        return {"result": cached, "reused": True}
    dev = resolve_device(variant.cfg.device) if device is None else device
    configure_precision(dev, variant.cfg.train.tf32)  # a variant may switch TF32
    _fresh_workspace(workspace, report_dir, variant.cfg)
    stages = STAGES if variant.portrait else tuple(s for s in STAGES if s != "portrait")
    log.info("ablate %s: training into %s", variant.name, workspace)
    train(subject, workspace, variant.cfg, dev, progress, stages=stages)
    log.info("ablate %s: evaluating into %s", variant.name, report_dir)
    result = evaluate(workspace, report_dir, EvaluateOptions(portrait=variant.portrait, max_frames=max_frames),
                      dev, progress=progress)
    return {"result": result, "reused": False}


def ablate(subject: str | Path, variants_dir: str | Path, out_dir: str | Path, budget: float = 1.0,
           overrides: list[str] | None = None, device="cpu", max_frames: int | None = None,
           progress: bool = True) -> list[dict]:
    """Train and evaluate every variant in ``variants_dir`` on ``subject`` (see the module docstring).

    ``device=None`` uses each variant's ``device`` key. Returns one dict per variant: ``name``, ``status`` ("ok" or
    "skipped"), ``reason`` (skipped), ``reused`` (its report was up to date), ``changes`` (dotted key → value
    against its base recipe), ``portrait``, ``metrics`` (the render row), ``ground_truth`` (the GT row), ``speed``,
    ``skipped_metrics`` (metric → reason) and ``report`` (its folder).
    """
    from synctalk.config import SyncTalkConfig, load_config
    from synctalk.data import SubjectDataset
    from synctalk.data.contract import TRAIN_STEPS
    from synctalk.eval.evaluate import code_version
    from synctalk.io.atomic import atomic_write_json

    code_version()  # pin the commit this run starts with (reports record it, not a later checkout)
    subject = Path(subject)
    if not subject.is_dir():
        raise UserInputError(f"subject directory {subject} does not exist; make one with `synctalk preprocess "
                             "VIDEO -o SUBJECT`")
    SubjectDataset(subject, require=TRAIN_STEPS)   # a broken subject is the user's error, not every variant's
    paths = find_variants(variants_dir)
    overrides = list(overrides or [])
    load_config(SyncTalkConfig, None, overrides)   # bad overrides fail once, before any training
    scale_schedule(SyncTalkConfig(), budget)
    if max_frames is not None and max_frames < 1:
        raise UserInputError(f"--max-frames must be at least 1, got {max_frames}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    entries = []
    for path in paths:
        name = path.stem
        entry = {"name": name, "status": "skipped", "reason": None, "reused": False, "changes": {},
                 "portrait": False, "metrics": {}, "ground_truth": {}, "speed": {}, "skipped_metrics": {},
                 "report": str(out_dir / name / "report")}
        try:
            variant = load_variant(path, overrides, budget)
            entry.update(changes=variant.changes, portrait=variant.portrait)
            outcome = _run_variant(subject, variant, out_dir / name, device, max_frames, progress)
        except SyncTalkError as exc:
            log.warning("ablate %s: skipped: %s", name, exc)
            entry["reason"] = str(exc)
        else:
            result = outcome["result"]
            entry.update(status="ok", reused=outcome["reused"], metrics=dict(result["rows"].get("render", {})),
                         ground_truth=dict(result["rows"].get(GT_ROW, {})), speed=dict(result.get("speed", {})),
                         skipped_metrics=dict(result.get("skipped", {})))
        record = {k: entry[k] for k in ("name", "status", "reason", "changes", "portrait")}
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / name / VARIANT_RECORD, {**_jsonable(record), "max_frames": max_frames,
                                                            "budget": budget, "overrides": overrides})
        entries.append(entry)
    write_summary(entries, out_dir, subject=subject, budget=budget)
    return entries


# ------------------------------------------------------------------------------------------------ summary
def _metric_reason(metric: str, skipped: dict) -> str | None:
    if metric in skipped:
        return skipped[metric]
    if metric in ("lse_d", "lse_c", "offset"):
        return skipped.get("lse")
    if metric.startswith("syncnet_"):
        return skipped.get("syncnet")
    return None


def table_columns(entries: list[dict]) -> list[str]:
    """The metric columns: the usual ones always, LPIPS / FID / SyncNet only when some variant has them."""
    return [m for m in METRICS if m not in OPTIONAL_METRICS or any(m in e["metrics"] for e in entries)]


def ground_truth_row(entries: list[dict]) -> dict:
    """The GT row of the first evaluated variant at the subject's resolution (else of any evaluated one)."""
    done = [e for e in entries if e["status"] == "ok"]
    for entry in sorted(done, key=lambda e: e["portrait"]):
        return {k: v for k, v in entry["ground_truth"].items() if k in GT_METRICS}
    return {}


def _value(entry: dict, column: str):
    return entry["speed"].get(column) if column in SPEED else entry["metrics"].get(column)


def _fmt(value) -> str:
    from synctalk.eval.evaluate import _fmt as fmt

    return "—" if value is None else fmt(value)


def _changes_text(changes: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in changes.items())


def summary_csv(entries: list[dict]) -> str:
    """One row per variant (metrics as stored in metrics.json, empty when absent) and the ground-truth row."""
    columns = table_columns(entries)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["variant", "status", *columns, *SPEED, "changes", "reason"])
    for e in entries:
        writer.writerow([e["name"], e["status"], *("" if _value(e, c) is None else repr(_value(e, c))
                                                   for c in (*columns, *SPEED)),
                         _changes_text(e["changes"]), e["reason"] or ""])
    gt = ground_truth_row(entries)
    writer.writerow([GT_ROW, "", *("" if gt.get(c) is None else repr(gt[c]) for c in columns), "", "", "", ""])
    return buffer.getvalue()


def summary_markdown(entries: list[dict], subject: Path | None = None, budget: float = 1.0,
                     charts: list[str] | None = None) -> str:
    from synctalk.eval.evaluate import LABELS

    columns = table_columns(entries)
    header = [LABELS.get(c, c) for c in columns] + [SPEED_LABELS[c] for c in SPEED] + ["changes"]
    lines = ["# Ablation" + (f" on {subject}" if subject else ""), "",
             f"Schedules scaled by {budget:g}; each row is the `render` row of the variant's metrics.json.", "",
             "| variant | " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1) + "---|"]
    for e in entries:
        name = e["name"] + (" (skipped)" if e["status"] != "ok" else "")
        lines.append(f"| {name} | " + " | ".join(_fmt(_value(e, c)) for c in (*columns, *SPEED))
                     + f" | {_changes_text(e['changes']) or '—'} |")
    gt = ground_truth_row(entries)
    lines.append(f"| {GT_ROW} | " + " | ".join(_fmt(gt.get(c)) for c in columns)
                 + " | —" * len(SPEED) + " | — |")
    lines += ["", "*AUE stand-in: mean absolute error of MediaPipe blendshape scores (see `synctalk evaluate`).", ""]
    reasons: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        if e["status"] != "ok":
            continue
        for column in columns:
            if _value(e, column) is None:
                reason = _metric_reason(column, e["skipped_metrics"]) or "not computed"
                reasons.setdefault((column, reason), []).append(e["name"])
    if reasons:
        lines += ["Skipped metrics:"]
        names = {e["name"] for e in entries if e["status"] == "ok"}
        for (column, reason), who in reasons.items():
            scope = "" if set(who) == names else f" ({', '.join(who)})"
            lines.append(f"- {LABELS.get(column, column)}{scope}: {reason}")
        lines.append("")
    failed = [e for e in entries if e["status"] != "ok"]
    if failed:
        lines += ["Skipped variants:"] + [f"- {e['name']}: {e['reason']}" for e in failed] + [""]
    if charts:
        lines += ["Charts: " + ", ".join(f"[{Path(c).stem}]({c})" for c in charts), ""]
    return "\n".join(lines)


def write_charts(entries: list[dict], charts_dir: Path) -> list[Path]:
    """One bar chart per metric with at least one value: variants on x, value labels, GT as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from synctalk.eval.evaluate import LABELS
    from synctalk.io.atomic import atomic_path

    charts_dir.mkdir(parents=True, exist_ok=True)
    gt = ground_truth_row(entries)
    written = []
    for column in (*table_columns(entries), *SPEED):
        values = [_value(e, column) for e in entries]
        if all(v is None for v in values):
            continue
        names = [e["name"] for e in entries]
        fig = Figure(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        heights = [0.0 if v is None else float(v) for v in values]
        bars = ax.bar(range(len(names)), heights, color=["#bbbbbb" if v is None else "#4c72b0" for v in values])
        for bar, value in zip(bars, values, strict=True):
            ax.annotate("—" if value is None else _fmt(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        if column.endswith(("lse_d", "lse_c")) and gt.get(column) is not None:
            ax.axhline(gt[column], color="black", linestyle="--", linewidth=1, label=f"ground truth {_fmt(gt[column])}")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(LABELS.get(column, SPEED_LABELS.get(column, column)))
        ax.margins(y=0.15)
        fig.tight_layout()
        path = charts_dir / f"{column}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        written.append(path)
    return written


def write_summary(entries: list[dict], out_dir: str | Path, subject: Path | None = None,
                  budget: float = 1.0) -> dict[str, Path]:
    """``ablation.csv``, ``ablation.md`` and ``charts/<metric>.png`` in ``out_dir``."""
    from synctalk.io.atomic import atomic_write_text

    out_dir = Path(out_dir)
    charts = write_charts(entries, out_dir / "charts")
    atomic_write_text(out_dir / "ablation.csv", summary_csv(entries))
    atomic_write_text(out_dir / "ablation.md", summary_markdown(
        entries, subject, budget, [str(p.relative_to(out_dir)) for p in charts]))
    return {"csv": out_dir / "ablation.csv", "md": out_dir / "ablation.md", "charts": out_dir / "charts"}
