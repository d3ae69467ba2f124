"""Promotion against the champion: before the alias moves, the candidate and the current
champion are compared on the same evaluation images (the candidate's stored rows, and the
champion compressing the same source bytes now, through the same engine and guard)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from nice.config import PromotionConfig


@dataclass
class Side:
    """One model's numbers on the evaluation images."""

    images: int
    bytes_ratio: float  # stored bytes / source bytes
    accuracy: float | None  # top-1 of the stored files against the labels
    flips: int  # stored files whose top-1 differs from the source's
    preservation: float  # share of images whose stored file keeps the source's top-1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def side(rows: Sequence[dict[str, Any]]) -> Side:
    src = sum(r["source_bytes"] for r in rows)
    out = sum(r["output_bytes"] if r["output_bytes"] is not None else r["source_bytes"] for r in rows)
    labelled = [r for r in rows if r.get("label") is not None]
    flips = sum(1 for r in rows if r["status"] == "compressed" and r["pred_output"] != r["pred_source"])
    return Side(images=len(rows), bytes_ratio=out / src if src else 1.0,
                accuracy=sum(r["pred_output"] == r["label"] for r in labelled) / len(labelled) if labelled else None,
                flips=flips, preservation=1 - flips / len(rows) if rows else 1.0)


@dataclass
class Comparison:
    champion_version: str
    candidate: Side
    champion: Side
    passed: bool
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"champion_version": self.champion_version, "candidate": self.candidate.to_dict(),
                "champion": self.champion.to_dict(), "passed": self.passed, "reasons": self.reasons}

    def tags(self) -> dict[str, str]:
        """Model-version tags: the decision and both sets of numbers."""
        out = {"nice.champion.version": self.champion_version,
               "nice.champion.passed": str(self.passed).lower(),
               "nice.champion.reasons": "; ".join(self.reasons)}
        for who, s in (("candidate", self.candidate), ("champion", self.champion)):
            out |= {f"nice.champion.{who}.{k}": f"{v:.6g}" if isinstance(v, float) else str(v)
                    for k, v in s.to_dict().items()}
        return out


def compare(candidate: Side, champion: Side, p: PromotionConfig, version: str) -> Comparison:
    """No worse than the champion within the margins of `p` (bytes relative, accuracy in
    points, flips in images)."""
    reasons, ok = [], True
    limit = champion.bytes_ratio * (1 + p.champion_bytes_margin)
    good = candidate.bytes_ratio <= limit
    ok &= good
    reasons.append(f"{'PASS' if good else 'FAIL'} vs champion v{version}: bytes ratio {candidate.bytes_ratio:.4f} "
                   f"vs {champion.bytes_ratio:.4f} (max {limit:.4f}, +{p.champion_bytes_margin * 100:.0f}%)")
    if candidate.accuracy is not None and champion.accuracy is not None:
        drop = (champion.accuracy - candidate.accuracy) * 100
        good = drop <= p.champion_accuracy_margin
        ok &= good
        reasons.append(f"{'PASS' if good else 'FAIL'} vs champion v{version}: accuracy on stored files "
                       f"{candidate.accuracy * 100:.2f}% vs {champion.accuracy * 100:.2f}% "
                       f"(max drop {p.champion_accuracy_margin} points)")
    good = candidate.flips <= champion.flips + p.champion_extra_flips
    ok &= good
    reasons.append(f"{'PASS' if good else 'FAIL'} vs champion v{version}: prediction flips {candidate.flips} vs "
                   f"{champion.flips} (max +{p.champion_extra_flips}); preservation "
                   f"{candidate.preservation * 100:.2f}% vs {champion.preservation * 100:.2f}%")
    return Comparison(version, candidate, champion, bool(ok), reasons)


def against_champion(candidate_rows: Sequence[dict[str, Any]], sources: Sequence[bytes], champion: Any,
                     version: str, p: PromotionConfig) -> Comparison:
    """The champion (a NiceModel) compresses the same `sources` the candidate's rows describe
    (its own config: the champion as it runs today); the two are compared on them."""
    from nice.compress.engine import Compressor, SourceItem

    comp = Compressor(champion, champion.config, run_id="champion-comparison")
    items = [SourceItem(uri=r["source_uri"] or r["source_key"], key=r["source_key"], data=data, label=r.get("label"))
             for r, data in zip(candidate_rows, sources)]
    champ_rows = [res.row for res in comp.compress(items)]
    return compare(side(candidate_rows), side(champ_rows), p, version)
