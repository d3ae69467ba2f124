"""Numbers from a savings table: what users rely on before trusting a model with an archive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nice.config import PromotionConfig

STATUSES = ("compressed", "kept_original", "skipped", "failed")


def savings_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (against labels) on the originals and on what was stored, bytes, statuses.

    Accuracy counts images the models saw (`compressed` and `kept_original`) with a label;
    bytes count every object that is stored at DST (all but `failed`)."""
    seen = [r for r in rows if r["status"] in ("compressed", "kept_original")]
    labelled = [r for r in seen if r.get("label") is not None]
    stored = [r for r in rows if r["status"] != "failed"]
    src = sum(r["source_bytes"] or 0 for r in stored)
    out = sum((r["output_bytes"] if r["output_bytes"] is not None else r["source_bytes"]) or 0 for r in stored)
    compressed = [r for r in rows if r["status"] == "compressed"]
    m: dict[str, Any] = {
        "objects": len(rows),
        "evaluated": len(seen),
        "labelled": len(labelled),
        "source_bytes": src,
        "output_bytes": out,
        "bytes_ratio": out / src if src else 1.0,
        "saved_bytes": src - out,
        "compressed_fraction": len(compressed) / len(seen) if seen else 0.0,
        "agreement": (sum(r["pred_output"] == r["pred_source"] for r in seen) / len(seen)) if seen else 1.0,
        "mean_mask_density": (sum(r["mask_density"] for r in compressed) / len(compressed)) if compressed else None,
        "counts": {s: sum(r["status"] == s for r in rows) for s in STATUSES},
    }
    if labelled:
        acc_src = sum(r["pred_source"] == r["label"] for r in labelled) / len(labelled)
        acc_out = sum(r["pred_output"] == r["label"] for r in labelled) / len(labelled)
        m.update(accuracy_source=acc_src, accuracy_output=acc_out, accuracy_drop_points=(acc_src - acc_out) * 100)
    else:
        m.update(accuracy_source=None, accuracy_output=None, accuracy_drop_points=None)
    return m


def metrics_by_model(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same numbers per model that made the rows (`model_uri`: a registry version or a
    directory, with its weights digest): an archive after a promotion holds outputs of both."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        key = r.get("model_uri") or "unknown model"
        if r.get("model_digest"):
            key += f" (weights {r['model_digest']})"
        groups.setdefault(key, []).append(r)
    out = {}
    for key, group in sorted(groups.items()):
        m = savings_metrics(group)
        out[key] = {k: m.get(k) for k in ("objects", "bytes_ratio", "saved_bytes", "compressed_fraction",
                                          "accuracy_output", "agreement")}
    return out


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # one line per gate, pass or fail

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons}


def check_gates(m: dict[str, Any], gates: PromotionConfig, benchmark: dict[str, Any] | None = None) -> GateResult:
    """Promotion gates: accuracy drop, bytes ratio, share actually compressed, and (when
    configured) the saving against the best baseline of the evaluation benchmark."""
    reasons, ok = [], True
    drop = m.get("accuracy_drop_points")
    if drop is None:
        # Without labels, the drop is measured against the source predictions instead.
        drop = (1.0 - m["agreement"]) * 100
        what = "prediction changes"
    else:
        what = "accuracy drop"
    good = drop <= gates.max_accuracy_drop
    ok &= good
    reasons.append(f"{'PASS' if good else 'FAIL'} {what} {drop:.2f} points (max {gates.max_accuracy_drop})")
    good = m["bytes_ratio"] <= gates.max_bytes_ratio
    ok &= good
    reasons.append(f"{'PASS' if good else 'FAIL'} bytes ratio {m['bytes_ratio']:.3f} (max {gates.max_bytes_ratio})")
    good = m["compressed_fraction"] >= gates.min_compressed_fraction
    ok &= good
    reasons.append(f"{'PASS' if good else 'FAIL'} compressed fraction {m['compressed_fraction']:.3f} "
                   f"(min {gates.min_compressed_fraction})")
    if gates.min_saving_vs_best is not None:
        saving = (benchmark or {}).get("saving_vs_best")
        good = saving is not None and saving >= gates.min_saving_vs_best
        ok &= good
        shown = "no benchmark" if saving is None else f"{saving * 100:.1f}%"
        reasons.append(f"{'PASS' if good else 'FAIL'} saving vs best baseline {shown} "
                       f"(min {gates.min_saving_vs_best * 100:.1f}%)")
    if not m["evaluated"]:
        ok = False
        reasons.append("FAIL no image was evaluated")
    return GateResult(passed=bool(ok), reasons=reasons)
