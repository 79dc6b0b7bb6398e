"""What happened to the faces of one photo, in one short line, from its report entry.

``faces: 1 restored with grandma (3 refs), 1 no match: too small (22 px)``: the line the CLI
prints per photo and the HTML report shows above its faces. It reads the same face objects as
the JSON report (``FaceOutcome.report``, or ``match``'s), so every place says the same thing.
"""
from __future__ import annotations

from typing import Any

# Short words for each reason code (refrestore.gallery.people.REASON_CODES) of a face without references.
_NO_MATCH = {
    "below-threshold": "below the threshold",
    "too-close": "too close to call",
    "too-small": "too small",
    "too-damaged": "too damaged to identify",
    "someone-else": "clearly someone else",
    "another-face": "another face of the photo is that person",
    "undecided": "too small to tell which face",
    "empty-gallery": "empty gallery",
}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _figure(code: str, decision: dict[str, Any]) -> str | None:
    """The number that says most about a "no match" (22 px, 0.950 < 0.954, ann vs bob)."""
    if code == "too-small":
        px = _num(decision.get("face_px"))
        return f"{px:.0f} px" if px is not None else None
    if code == "below-threshold":
        best, thr = _num(decision.get("best_score")), _num(decision.get("threshold"))
        return f"{best:.3f} < {thr:.3f}" if best is not None and thr is not None else None
    if code == "too-close" and decision.get("best_person") and decision.get("second_person"):
        return f"{decision['best_person']} vs {decision['second_person']}"
    return None


def face_outcome(face: dict[str, Any], restores: bool = True) -> tuple[str, str | None]:
    """(what happened, a figure or None) for one face of a report: ("restored with grandma",
    "3 refs"), ("no match: too small", "22 px"). ``restores``: False for ``match``, which only
    chooses references ("references of grandma")."""
    if face.get("error"):
        return ("failed, pasted back unrestored" if restores else "failed"), None
    ref = face.get("reference")
    code = str(face.get("reason_code") or "")
    decision = face.get("decision") or (face.get("selection") or {}).get("decision") or {}
    if ref:
        n = 1 + len(ref.get("alternatives") or [])
        person = ref.get("person") or (f"--ref {str(ref.get('path') or '').rsplit('/', 1)[-1]}" if ref.get("forced") else "?")
        refs = f"{n} ref{'s' if n != 1 else ''}"
        if code == "declared":
            refs += ", declared by its one-person folder"
        elif code == "unverifiable-declared":
            refs += ", declared by its one-person folder: too small or damaged to check"
        if face.get("left_as_is"):
            return f"left as it was (needed nothing; {person} matched)", None
        return (f"restored with {person}" if restores else f"references of {person}"), refs
    if code == "no-gallery" or (not code and not decision):
        if face.get("left_as_is"):
            return "left as it was (needed nothing)", None
        return ("restored" if restores else "no references"), None
    what = "no match: " + _NO_MATCH.get(code, "below the threshold")
    if face.get("left_as_is"):
        what += ", left as it was"
    return what, _figure(code, decision)


def faces_line(faces: list[dict[str, Any]], restores: bool = True) -> str | None:
    """``faces: 1 restored with grandma (3 refs), 1 no match: too small (22 px)``; None without faces.

    Faces with the same outcome are counted together, their figures listed."""
    if not faces:
        return None
    groups: dict[str, tuple[int, list[str]]] = {}
    for face in faces:
        what, figure = face_outcome(face, restores)
        count, figures = groups.get(what, (0, []))
        groups[what] = (count + 1, figures + ([figure] if figure else []))
    parts = [f"{count} {what}" + (f" ({'; '.join(figures)})" if figures else "")
             for what, (count, figures) in groups.items()]
    return "faces: " + ", ".join(parts)
