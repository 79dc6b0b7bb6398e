"""``refrestore match``: show which gallery references would guide each face, without restoring."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from .common import consoles, fail, is_terminal, print_error, setup_logging, shown

if TYPE_CHECKING:  # numpy is imported when a sheet is drawn: `match --help` stays fast
    import numpy as np

log = logging.getLogger("refrestore")


def register(app: typer.Typer) -> None:
    app.command("match", no_args_is_help=True)(match)


def match(
    inputs: list[Path] = typer.Argument(..., help="Photos or folders of photos whose faces to match."),
    refs: list[Path] = typer.Option([], "--refs", help="Gallery folder or photo of good references (repeatable)."),
    ref: Path | None = typer.Option(None, "--ref", help="Force this photo as the reference (single-face photos)."),
    person: Path | None = typer.Option(None, "--person", metavar="DIR", help="Photos of the one person these photos show: used unless a face is clearly someone else (instead of --refs)."),
    json_report: Path | None = typer.Option(None, "--json", help="Write a machine-readable report here."),
    html_report: Path | None = typer.Option(None, "--html", help="Write a report to look at in a browser here (images beside it)."),
    top_k: int = typer.Option(3, "--top-k", min=1, max=16, help="References per face."),
    compare: Path | None = typer.Option(None, "--compare", help="Write a contact sheet per photo into this folder."),
    detector: str = typer.Option("auto", "--detector", help="auto, retinaface, retinaface_resnet50, retinaface_mobile0.25 or dlib."),
    identity: str = typer.Option("auto", "--identity", help="Identity model: auto, mobilefacenet-dual, mobilefacenet-lr, mobilefacenet, fused, faceid, dlib or arcface."),
    threshold: float | None = typer.Option(None, "--threshold", min=-1.0, max=1.0, help="Override the calibrated same-person threshold."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    weights_dir: Path | None = typer.Option(None, "--weights-dir", help="Weights folder for this run."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    """Pick references from a gallery for every face, and say why."""
    setup_logging(debug)
    try:
        code = _match(inputs, refs, ref, json_report, top_k, compare, detector, identity, threshold,
                      device, weights_dir, html_report, person)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted", 130)
    except (ImportError, MemoryError):
        raise  # a library that cannot load (a memory limit): cli.main says so in one line
    except Exception as exc:
        if debug:
            raise
        raise fail(f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__)
    raise typer.Exit(code)


def _match(inputs: list[Path], refs: list[Path], ref: Path | None, json_report: Path | None, top_k: int,
           compare: Path | None, detector_name: str, identity_name: str, threshold: float | None,
           device_name: str, weights_dir: Path | None, html_report: Path | None = None,
           person: Path | None = None) -> int:
    # markup off and names escaped: what is printed holds the user's file names
    out, err = consoles()
    if person is not None:
        if refs or ref is not None:
            raise fail("--person is the whole gallery (the one person these photos show): give it without --refs or --ref", 2)
        if not person.is_dir():
            raise fail(f"--person {person}: no such folder", 2)
        refs = [person]
    if not refs and ref is None:
        raise fail("give a gallery with --refs DIR (or one reference with --ref FILE, or --person DIR)", 2)
    if refs and ref is not None:
        raise fail("--ref and --refs together: choose one", 2)
    from .usage import detector_problem, device_problem, first_problem, identity_problem, reference_problem

    problem = first_problem(reference_problem(refs, ref), detector_problem(detector_name),
                            identity_problem(identity_name), device_problem(device_name))
    if problem:  # before torch loads (cli.usage)
        raise fail(problem, 2)
    if not any(p.exists() for p in inputs):
        raise fail(f"{inputs[0]}: no such file or folder", 2)
    if compare is not None and compare.exists() and not compare.is_dir():
        raise fail(f"--compare {compare}: exists and is not a folder", 2)
    json_report, html_report, _locks = _refuse_clashes(inputs, [*refs, *([ref] if ref else [])], json_report,
                                                       html_report, compare)
    from ..fileio import stream_fd

    if json_report is not None and stream_fd(json_report) == 1:
        out = err  # stdout carries the report
    # the libraries (torch among them) only once the gate has let the run through
    from ..batch import BatchSummary, ImageReport
    from ..detection import DetectorError, init_detector
    from ..devices import DeviceError, pick_device
    from ..discover import find_inputs
    from ..gallery import Gallery, describe_query, forced_reference, select_photo
    from ..gallery.select import second_opinion
    from ..gallery.index import aligned_crop_of, find_faces
    from ..identity import init_identity_model
    from ..imageio import ImageReadError, read_image
    from ..paths import cache_dir
    from ..report import build_document, write_html_report, write_json_report
    from ..weights import WeightsError, WeightStore
    try:
        device = pick_device(device_name)
        store = WeightStore(weights_dir)
        det = init_detector(detector_name, store, device)
        model = init_identity_model(identity_name, store=store, device=device)
    except (DeviceError, DetectorError, ValueError) as exc:
        raise fail(str(exc), 2)
    except (WeightsError, FileNotFoundError) as exc:
        raise fail(str(exc), 1)

    gallery = None
    forced = None
    if ref is not None:
        try:
            forced = forced_reference(ref, det, model)
        except ValueError as exc:
            raise fail(str(exc), 1)
    else:
        gallery = _build_gallery(Gallery, list(refs), det, model, cache_dir(), err,
                                 people=[person] if person is not None else [])
        for problem in gallery.problems:
            err.print(f"warning: gallery {problem.path}: {problem.reason}")
        if not gallery.faces:
            raise fail("no faces found in the --refs gallery", 1)
        st = gallery.stats
        err.print(f"gallery: {st.faces} faces in {st.files} photos ({st.from_cache} from cache, "
                  f"{st.indexed} indexed) with {model.name}")

    # a one-person rule's second opinion, made once for the run
    second_model = functools.cache(lambda name: init_identity_model(name, store=store, device=device))

    found, problems = find_inputs(inputs, recursive=False)
    summary = BatchSummary()
    summary.images.extend(ImageReport(str(p), None, "error", reason) for p, reason in problems)
    for item in found:
        report = ImageReport(str(item.path), None, "ok")
        summary.images.append(report)
        try:
            rgb = read_image(item.path).rgb
        except ImageReadError as exc:
            report.status, report.error = "error", str(exc)
            continue
        # like the gallery: a tight aligned crop is found (padded) and used as it is
        found_faces = find_faces(rgb, det)
        faces = [f for f, _ in found_faces]
        if not faces:
            report.status = "no_faces"
            out.print(f"{item.path}: no faces", markup=False)
            continue
        if forced is not None and len(faces) > 1:
            report.warnings.append(f"--ref is meant for single-face photos; used for all {len(faces)} faces")
        rows = []
        crops = [aligned_crop_of(rgb, face, already) for face, already in found_faces]
        if gallery is not None:
            # the faces of a photo are decided together (a person goes to one face of it)
            queries = [describe_query(crop, face, model, gallery.analyzer(), affine)
                       for (crop, affine), face in zip(crops, faces)]
            queries, centroid = second_opinion(gallery, [c for c, _ in crops], queries, second_model)
            selections = select_photo(gallery, queries, top_k=top_k, threshold=threshold, second_centroid=centroid)
        for i, (face, already) in enumerate(found_faces):
            crop, affine = crops[i]
            if forced is not None:
                refs_list = [forced]
                ref_json: dict[str, Any] | None = {"path": forced.path, "face_index": forced.face_index,
                                                   "score": forced.score, **forced.components,
                                                   "regions": forced.regions, "forced": True,
                                                   "alternatives": []}
                extra: dict[str, Any] = {"reason": f"--ref {forced.path}: chosen by the user", "reason_code": "forced"}
            else:
                sel = selections[i]
                refs_list, ref_json = sel.references, sel.report()
                warning = sel.warning(i)
                if warning:
                    report.warnings.append(warning)
                extra = {"reference_rule": sel.rule, "reason": sel.reason(), "reason_code": sel.reason_code,
                         "selection": {"best_identity": round(float(sel.best_identity), 4),
                                       "threshold": round(sel.threshold, 4),
                                       "identity_model": sel.identity_model,
                                       "candidates": len(sel.candidates),
                                       "person": sel.person, "decision": sel.explain()}}
            report.faces.append({
                "index": i,
                "box": [round(float(v), 2) for v in face.box],
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
                "landmark_kind": face.landmark_kind,
                "detector": face.detector,
                "detector_score": round(float(face.score), 4),
                "reference": ref_json,
                "restorer": None,
                "restored": False,
                "error": None,
                **extra,
            })
            rows.append((i, face, crop, refs_list, ref_json, extra))
        _print_table(out, item.path, rows)
        for warning in report.warnings:
            err.print(f"warning: {item.path}: {warning}")
        if compare is not None:
            try:
                sheet = _contact_sheet([(r[2], r[3], r[4], _short_why(r[5])) for r in rows])
                _write_png(compare / f"{item.path.stem}_match.png", sheet)
            except OSError as exc:
                report.warnings.append(f"contact sheet not written: {exc}")
                err.print(f"warning: {item.path}: contact sheet not written: {exc}")
    for r in summary.images:
        if r.status == "error":
            print_error(f"{r.input}: {r.error}", err)
    if json_report is not None or html_report is not None:
        document = build_document(summary, {
            "command": "match",
            "detector": getattr(det, "name", None),
            "identity_model": f"{model.name} {model.version}",
            "gallery": None if gallery is None else {
                "photos": gallery.stats.files, "faces": len(gallery.faces),
                "problems": [{"path": str(p.path), "reason": p.reason} for p in gallery.problems]},
        })
        if json_report is not None:
            write_json_report(json_report, document)  # the user's umask, not mkstemp's 0600
        if html_report is not None:
            write_html_report(html_report, document, title="refrestore match")
    return 1 if summary.failed else 0


def _refuse_clashes(inputs: list[Path], refs: list[Path], json_report: Path | None, html_report: Path | None,
                    compare: Path | None) -> tuple[Path | None, Path | None, list[Any]]:
    """The one gate (``engines.clash``), before any work: exit 2 when a report or contact sheet
    would land on an input, a reference, a file refrestore did not write or another file of
    the run. Returns the report paths as the writers take them, and the reports' locks."""
    from ..discover import find_inputs
    from ..engines.clash import ClashError, check_run_writes
    from ..fileio import is_stream_path, lock_for_writing

    found, _ = find_inputs(inputs, recursive=False)
    sheets = [(f.path, compare / f"{f.path.stem}_match.png") for f in found] if compare is not None else []
    try:
        plan = check_run_writes([], refs, reports=[("--json", json_report), ("--html", html_report)], html=html_report,
                                sheets=sheets, protect=[f.path for f in found])
    except ClashError as exc:
        raise fail(str(exc), 2)
    locks = []
    for flag, path in (("--json", json_report), ("--html", html_report)):
        if path is not None and not is_stream_path(plan.destination(path)):
            lock = lock_for_writing(path)
            if lock is None:
                raise fail(f"{flag} {path}: another refrestore run is writing this report; wait for it or "
                           f"choose another path", 2)
            locks.append(lock)
    return plan.destination(json_report), plan.destination(html_report), locks


def _build_gallery(gallery_cls: Any, refs: list[Path], det: Any, model: Any, cache: Path, err: Console,
                   people: list[Path] | None = None) -> Any:
    from .progress import GalleryProgress

    with GalleryProgress(err, live=is_terminal(), plain=True) as progress:
        return gallery_cls.build(refs, det, model, cache_dir=cache, progress=progress, people=people or [])


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _print_table(console: Console, path: Path, rows: list[tuple]) -> None:
    if not console.is_terminal:
        _print_plain(console, path, rows)
        return
    table = Table(title=shown(str(path)), title_justify="left")
    for col in ("face", "reference", "identity", "pose", "expression", "quality", "total", "regions e/n/m/o"):
        table.add_column(col, justify="left" if col in ("reference", "regions e/n/m/o") else "right")
    for i, face, _aligned, refs, rep, extra in rows:
        label = f"{i} ({face.width:.0f}px)"
        if rep is None:
            table.add_row(label, shown(f"no match ({_why(extra)})"), "", "", "", "", "", "")
            continue
        person = rep.get("person")
        for k, r in enumerate(refs):
            c = r.components
            reg = r.regions
            name = shown(f"{Path(r.path).name}#{r.face_index}")
            if k == 0 and person:
                name = f"{shown(str(person))}: {name} ({_margins(rep.get('decision') or {})})"
            table.add_row(label if k == 0 else "", name,
                          _fmt(c.get("identity")), _fmt(c.get("pose")), _fmt(c.get("expression")),
                          _fmt(c.get("quality")), _fmt(r.score),
                          "/".join(f"{reg.get(x, 0):.1f}" for x in ("eyes", "nose", "mouth", "outline")))
    console.print(table)


def _why(extra: dict[str, Any]) -> str:
    """Why a face got no match, with its figures: the decision's own reason ("face 22 px wide:
    too small to identify (< 32 px)", "best ann 0.912 below threshold 0.953"), as the reports say it."""
    return str(extra.get("reason") or "no match").removeprefix("no match: ")


def _short_why(extra: dict[str, Any]) -> str:
    """"too small (22 px)": the reason in a few words, for a contact sheet's caption."""
    from ..report.outcome import face_outcome

    what, figure = face_outcome({"reference": None, **extra}, restores=False)
    what = what.removeprefix("no match: ")
    return f"{what} ({figure})" if figure else what


def _margins(dec: dict[str, Any]) -> str:
    """'score 0.953, threshold 0.930 (+0.023), second bob 0.901 (gap 0.052, needed 0.010)'."""
    if not dec:
        return ""
    text = f"score {dec.get('best_score', 0):.3f}, threshold {dec.get('threshold', 0):.3f} ({dec.get('margin', 0):+.3f})"
    if dec.get("second_person"):
        gap = dec["best_score"] - dec["second_score"]
        text += (f", second {dec['second_person']} {dec['second_score']:.3f} (gap {gap:.3f}, "
                 f"needed {dec.get('required_gap', 0):.3f})")
    return text


def _print_plain(console: Console, path: Path, rows: list[tuple]) -> None:
    """One line per face and reference, for logs and pipes (no wrapping of long names)."""
    for i, face, _aligned, refs, rep, extra in rows:
        head = f"{path} face {i} ({face.width:.0f}px)"
        if rep is None:
            console.print(f"{head}: no match ({_why(extra)})", markup=False)
            continue
        if rep.get("person"):
            console.print(f"{head}: person {rep['person']} ({_margins(rep.get('decision') or {})})", markup=False)
        for k, r in enumerate(refs):
            c = r.components
            console.print(f"{head}: ref {k + 1} {r.path}#{r.face_index} identity {_fmt(c.get('identity'))} "
                          f"pose {_fmt(c.get('pose'))} expression {_fmt(c.get('expression'))} "
                          f"quality {_fmt(c.get('quality'))} total {_fmt(r.score)}", markup=False)


CAPTION_LINES = 2
CAPTION_SCALE = 0.45
CAPTION_LINE_PX = 18


def fit_caption(text: str, width: int, scale: float = CAPTION_SCALE) -> str:
    """``text`` shortened in the middle ("abc...xyz") until it fits ``width`` pixels."""
    import cv2

    def wide(t: str) -> int:
        return cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]

    if wide(text) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2:]
        if wide(f"{head}...{tail}") <= width:
            return f"{head}...{tail}"
    return "..."


def _contact_sheet(rows: list[tuple[np.ndarray, list, dict | None, str]], tile: int = 256) -> np.ndarray:
    """One row per face: the face, then its chosen references ("no match" and why when none).

    Captions go in a strip under each tile, one item per line and shortened to the tile's
    width, so they are never cut off by the next tile nor drawn over the face.
    """
    import cv2
    import numpy as np

    width = max(1 + max((len(refs) for _, refs, _, _ in rows), default=0), 2)
    gap = 6
    strip = CAPTION_LINES * CAPTION_LINE_PX + 6
    row_h = tile + strip + gap
    sheet = np.full((len(rows) * row_h + gap, width * (tile + gap) + gap, 3), 255, np.uint8)
    for r, (aligned, refs, rep, why) in enumerate(rows):
        tiles: list[tuple[np.ndarray, list[str]]] = [(aligned, [f"face {r}", "input"])]
        if rep is None:
            blank = np.full((tile, tile, 3), 200, np.uint8)
            cv2.putText(blank, "no match", (tile // 2 - 45, tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                        (60, 60, 60), 2, cv2.LINE_AA)
            tiles.append((blank, ["no match", why or "no references"]))
        else:
            person = rep.get("person") if isinstance(rep, dict) else None
            for k, ref in enumerate(refs):
                first = f"{person}: " if person and k == 0 else ""
                tiles.append((ref.image, [f"{first}{Path(ref.path).name} #{ref.face_index}", f"score {ref.score:.3f}"]))
        for c, (img, caption) in enumerate(tiles):
            small = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
            y, x = gap + r * row_h, gap + c * (tile + gap)
            sheet[y:y + tile, x:x + tile] = small
            for k, line in enumerate(caption[:CAPTION_LINES]):
                text = fit_caption(line, tile - 4)
                cv2.putText(sheet, text, (x + 2, y + tile + (k + 1) * CAPTION_LINE_PX),
                            cv2.FONT_HERSHEY_SIMPLEX, CAPTION_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Write through refrestore's one writer (atomic, recorded as refrestore's: a rerun never
    takes a contact sheet for a photo of the gallery)."""
    from PIL import Image

    from ..fileio import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: Image.fromarray(rgb).save(f, format="PNG"))
