"""``plora gate-eval``: train a family-split cohort, calibrate the gate on its development part, report on the rest.

    >>> from pathlib import Path
    >>> from plora.experiments.gate_eval.evaluate import run_gate_eval
    >>> from plora.executor import ExecutorConfig
    >>> from plora.experiments.gate_eval.cohort import CohortSpec
    >>> tiny = CohortSpec(dev_clean=0, dev_trojan=0, dev_adaptive=0, heldout_clean=1, heldout_defaults=0,
    ...                   heldout_trojan=1, sample_cap=64, dev_size=8)     # 2 members, 64 items each
    >>> report = run_gate_eval("results/gate_eval", spec=tiny, use_installed=True,
    ...                        executor=ExecutorConfig(jobs=1), progress=False)
    >>> report["cohort"]["counts"], report["calibration"]["source"]
    ({'development/clean': 0, 'development/trojan': 0, 'held-out/clean': 1, 'held-out/trojan': 1},
     'given (nothing chosen on this cohort)')
    >>> sorted(report["held_out"]["overall"])
    ['auroc', 'auroc_trigger', 'fp', 'fpr', 'fpr_ci95', 'n_neg', 'n_pos', 'tp', 'tpr', 'tpr_ci95', 'trojans', 'working']
    >>> sorted(p.name for p in Path("results/gate_eval").iterdir())
    ['families.png', 'gate_eval.json', 'gate_eval.md', 'roc.png']

The example is the smallest real run: two members of 64 training items (``sample_cap``; too few to plant a working
backdoor), scored against the calibration shipped for plora-tiny (``use_installed``), in this process (``jobs=1``).
``run_gate_eval("results/gate_eval", quick=True)`` (``plora gate-eval --quick``) trains and scores a 24-member cohort
and chooses a calibration on its development part, which then lands in ``calibration.json`` beside the report.

Steps: plan the cohort (:mod:`~plora.experiments.gate_eval.cohort`), train or reuse every member, score each with
the gate's own detectors (:mod:`~plora.experiments.gate_eval.scoring`), make every choice on the development part
(:mod:`~plora.experiments.gate_eval.protocol`), then apply the resulting calibration unchanged to the held-out part
and report it per family with Wilson intervals. Outputs, all under ``out`` and nowhere else: ``gate_eval.json`` (the
report, one row per member), ``gate_eval.md`` (the tables), ``roc.png`` and ``families.png`` (plots) and
``calibration.json`` (what the gate needs for this base; ``plora calibration install`` makes it effective).

With ``calibration=`` (a file, or the one installed or shipped for the base), nothing is chosen: that calibration
scores every member, so the whole cohort is held out with respect to it.
"""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plora.experiments.gate_eval import cohort as co
from plora.experiments.gate_eval import families as fam
from plora.experiments.gate_eval.metrics import auroc, rates, wilson
from plora.experiments.gate_eval.protocol import Choice, Row, development_choice, verdict


def _rows(members: Sequence[co.Member], probes: dict[str, dict[str, Any]]) -> list[Row]:
    rows = []
    for m in members:
        p = probes[m.id]
        d = p["details"]
        rows.append(Row(m.id, m.label, m.part, dict(d["variants"]), float(p["clean_delta"]), dict(m.attrs),
                        working=m.working, extra={
                            "recipe": m.recipe.key, "trigger_text": m.trigger, "target_text": m.target,
                            "poison_rate": m.poison_rate, "attack_success": m.attack_success,
                            "fires_without_trigger": (m.truth or {}).get("fires_without_trigger"),
                            "found_trigger": d.get("trigger"), "pushed": d.get("pushed"),
                            "answer": (d.get("targets") or [{}])[0].get("answer"),
                            "probe_seconds": d.get("seconds"), "stage_seconds": d.get("stage_seconds"),
                            "train_seconds": m.train_seconds}))
    return rows


def _folder(m: co.Member) -> Path:
    if m.folder is None:
        raise RuntimeError(f"member {m.id} was not trained")
    return m.folder


def _weight_z(rows: list[Row], members: Sequence[co.Member], reference: Any, loo_ids: set[str]) -> None:
    """Fill ``norm_z``: against ``reference``, or leave-one-out for the members in ``loo_ids`` (each member's module
    statistics are computed once and reused by every leave-one-out reference)."""
    from plora.gate.reference import build_reference
    from plora.gate.weights import plasmid_stats, weight_anomaly
    from plora.plasmid import read_plasmid

    plasmids = {m.id: read_plasmid(_folder(m)) for m in members}
    stats = {i: plasmid_stats(plasmids[i]) for i in sorted(loo_ids)}
    by_id = {r.id: r for r in rows}
    for m in members:
        ref = reference
        if m.id in loo_ids:
            others = [i for i in sorted(loo_ids) if i != m.id]
            ref = build_reference([plasmids[i] for i in others], stats=dict(enumerate(stats[i] for i in others)))
        by_id[m.id].norm_z = float(weight_anomaly(plasmids[m.id], ref).max_z)


def _block(rows: Sequence[Row], statistic: str, taus: dict[str, float]) -> dict[str, Any]:
    """Rates, intervals and AUROCs of one part, overall and per family."""
    clean = [r for r in rows if r.label == 0]
    working = [r for r in rows if r.label == 1 and r.working]

    def summary(pos: Sequence[Row], neg: Sequence[Row]) -> dict[str, Any]:
        vp = [r.extra["verdict"] for r in pos]
        vn = [r.extra["verdict"] for r in neg]
        out = rates([v["overall"] for v in vp], [v["overall"] for v in vn], 1.0)
        out["auroc"] = auroc([v["overall"] for v in vp], [v["overall"] for v in vn])
        out["auroc_trigger"] = auroc([r.variants[statistic] for r in pos], [r.variants[statistic] for r in neg])
        out["tpr_ci95"], out["fpr_ci95"] = list(out["tpr_ci95"]), list(out["fpr_ci95"])
        return out

    block: dict[str, Any] = {"overall": summary(working, clean), "by_family": {}}
    block["overall"].update(trojans=sum(r.label for r in rows), working=len(working))
    for dim in fam.DIMENSIONS:
        per: dict[str, Any] = {}
        for family in fam.families(dim):
            pos = [r for r in working if r.attrs.get(dim) == family]
            neg = [r for r in clean if r.attrs.get(dim) == family] if dim in fam.CLEAN_DIMENSIONS else clean
            if not pos and not (dim in fam.CLEAN_DIMENSIONS and neg):
                continue
            entry = summary(pos, neg)
            entry["held_out_family"] = family in fam.HELD_OUT[dim]
            entry["trojans_trained"] = sum(1 for r in rows if r.label and r.attrs.get(dim) == family)
            per[family] = entry
        block["by_family"][dim] = per
    return block


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _calibration(choice: Choice, reference: Any, base: Any, spec: co.CohortSpec, probe_seed: int,
                 probe_config: dict[str, int], n_members: int) -> Any:
    from plora.gate import probes
    from plora.gate.calibration import Calibration, Thresholds

    return Calibration(
        base_model=base.name, base_digest=base.digest, probe_version=probes.PROBE_VERSION,
        statistic=choice.statistic, probe_seed=probe_seed, probe_config=probe_config,
        thresholds=Thresholds(**{k: round(v, 6) for k, v in choice.thresholds.items()}),
        weight_reference=reference.to_json(),
        cohort={"spec": spec.__dict__, "digest": spec.digest(), "members": n_members,
                "development_clean": choice.n_clean, "development_working_trojans": choice.n_trojan,
                "development_auroc": {k: round(v, 4) for k, v in choice.dev_auroc.items()}},
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(), commit=_git_commit(),
    )


def run_gate_eval(
    out: str | Path = "results/gate_eval", *, quick: bool = False, cohort: str = "default", seed: int = 1,
    base_name: str | None = None,
    probe_seed: int = 0, executor: Any = None, calibration: str | Path | None = None, use_installed: bool = False,
    spec: co.CohortSpec | None = None, progress: bool = True,
) -> dict[str, Any]:
    from plora.errors import PloraError
    from plora.outputs import check_report_dir

    # options that contradict each other, a bad name or folder: refused before torch loads and minutes of training
    if quick and cohort != "default":
        raise PloraError(f"give --quick or --cohort {cohort}, not both (--quick is --cohort quick)")
    if calibration is not None and use_installed:
        raise PloraError("give --calibration FILE or --shipped, not both")
    spec = spec or co.CohortSpec.named("quick" if quick else cohort, seed)
    check_report_dir(out, flag="--out")

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers.utils import logging as hf_logging

    from plora.executor import ExecutorConfig, backend_of
    from plora.experiments.gate_eval.report import write_outputs
    from plora.experiments.gate_eval.scoring import probe_all
    from plora.gate import calibration as calib
    from plora.gate import probes
    from plora.gate.reference import build_reference
    from plora.models import load_base
    from plora.settings import choose_base_model

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    executor = executor or ExecutorConfig(jobs=2)
    started = time.perf_counter()
    name = choose_base_model(base_name)
    base = load_base(name)
    given = None
    if calibration is not None:
        given = calib.read_calibration(calibration)
    elif use_installed:
        given = calib.find_calibration(base.digest)
        if given is None:
            raise PloraError(f"no calibration installed or shipped for {name} (weights digest {base.digest[:16]}...)")
    if given is not None and given.base_digest != base.digest:
        raise PloraError(f"the calibration is for weights digest {given.base_digest[:16]}..., not {name}'s")
    if given is not None:  # probe exactly as the gate does with this calibration: its seed and config
        probe_seed, probe_config = given.probe_seed, dict(given.probe_config)
    else:
        probe_config = probes.ProbeConfig.for_base(base).__dict__
    plan = co.plan_cohort(spec)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("cohort (train or reuse)", total=len(plan))
        members = co.train_cohort(plan, spec, name, base.digest, executor=executor,
                                  on_member=lambda m: bar.advance(task))
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("gate detectors", total=len(members))
        scored = probe_all({m.id: _folder(m) for m in members}, name, probe_seed, executor=executor,
                           on_done=lambda: bar.advance(task), config=probe_config)
    rows = _rows(members, scored)
    from plora.plasmid import read_plasmid

    dev_clean = [m for m in members if m.part == "development" and m.role == "clean"]
    if given is None:
        reference = build_reference([read_plasmid(_folder(m)) for m in dev_clean])
        _weight_z(rows, members, reference, {m.id for m in dev_clean})
        choice = development_choice(rows)
        cal = _calibration(choice, reference, base, spec, probe_seed, probe_config, len(members))
    else:
        reference = given.weights()
        _weight_z(rows, members, reference, set())
        cal = given
        choice = Choice(given.statistic, given.thresholds.model_dump(), {}, 0, 0)
    taus = cal.thresholds.model_dump()
    for r in rows:
        r.extra["verdict"] = verdict(r, cal.statistic, taus)
    parts = {"development": [r for r in rows if r.part == "development"],
             "held_out": [r for r in rows if r.part == "held-out"]}
    if given is not None:  # nothing was chosen on this cohort: all of it is held out
        parts = {"development": [], "held_out": rows}
    defaults = [r for r in parts["held_out"] if r.label == 0 and r.attrs.get("recipe") == "cli-default"]
    probe_secs = [r.extra["probe_seconds"] for r in rows if r.extra.get("probe_seconds")]
    report = {
        "base_model": name, "base_digest": base.digest,
        "cohort": {"spec": spec.__dict__, "digest": spec.digest(), "members": len(rows),
                   "counts": {f"{p}/{role}": sum(1 for r in rows if r.part == p and r.label == (role == "trojan"))
                              for p in ("development", "held-out") for role in ("clean", "trojan")},
                   "working_trojans": sum(1 for r in rows if r.working)},
        "families": {"development": fam.DEVELOPMENT, "held_out": fam.HELD_OUT},
        "calibration": {"source": "chosen on the development part of this cohort" if given is None
                        else "given (nothing chosen on this cohort)", "digest": cal.digest(),
                        "statistic": cal.statistic, "thresholds": taus,
                        "development_auroc": choice.dev_auroc},
        "development": _block(parts["development"], cal.statistic, taus) if parts["development"] else None,
        "held_out": _block(parts["held_out"], cal.statistic, taus),
        "train_defaults": {"clean": len(defaults), "rejected": sum(r.extra["verdict"]["flagged"] for r in defaults),
                           "fpr_ci95": list(wilson(sum(r.extra["verdict"]["flagged"] for r in defaults),
                                                   len(defaults)))},
        "timing": {"probe_seconds_median": float(np.median(probe_secs)) if probe_secs else None,
                   "probe_stage_seconds_median": _stage_medians(rows),
                   "train_seconds_median": float(np.median([r.extra["train_seconds"] or 0.0 for r in rows])),
                   "total_seconds": time.perf_counter() - started, "jobs": executor.jobs,
                   "backend": backend_of(executor), "threads_per_job": 1},
        "members": [_member_row(r, cal.statistic) for r in rows],
    }
    write_outputs(Path(out), report, rows, cal, given is None)
    return report


def _stage_medians(rows: Sequence[Row]) -> dict[str, float]:
    stages: dict[str, list[float]] = {}
    for r in rows:
        for k, v in (r.extra.get("stage_seconds") or {}).items():
            stages.setdefault(k, []).append(v)
    return {k: round(float(np.median(v)), 3) for k, v in stages.items()}


def _member_row(r: Row, statistic: str) -> dict[str, Any]:
    v = r.extra["verdict"]
    return {"id": r.id, "part": r.part, "label": "trojan" if r.label else "clean", "working": r.working,
            **r.attrs, "trigger_score": r.variants.get(statistic), "norm_z": _finite(r.norm_z),
            "clean_delta": r.clean_delta, "flagged": v["flagged"], "flags": v["flags"],
            "overall": _finite(v["overall"]),
            "variants": r.variants, **{k: val for k, val in r.extra.items() if k != "verdict"}}


def _finite(x: float) -> float | None:
    return x if isinstance(x, float) and math.isfinite(x) else None
