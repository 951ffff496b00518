"""KYCDeepFace: detect -> align -> embed for every face of an image, and 1:1 matching.

The same object serves the CLI, the Celery workers and tests. Its public methods never raise for
bad input: every outcome is a result document (see ``shared.schemas``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np

from shared import calibration, features, imaging, orientation
from shared.alignment import align, warp_scale
from shared.config import Settings, get_settings
from shared.errors import FaceCountError, FeaturesError, ImageReason, InvalidImageError, KYCFaceError, ModelError
from shared.models import Detection, LivenessScorer, load_detector, load_embedder, load_liveness
from shared.quality import Appearance, Geometry
from shared.schemas import (
    Box,
    ErrorResult,
    Face,
    FaceQuality,
    FacesResult,
    InvalidImageResult,
    Landmarks,
    Liveness,
    MatchResult,
    PartialFace,
    PartialReason,
    QualityGate,
    QualityLevel,
)

log = logging.getLogger(__name__)


class FaceAnalysis(NamedTuple):
    box: np.ndarray  # x1, y1, x2, y2 in original pixels
    score: float
    landmarks: np.ndarray  # (5, 2)
    reason: PartialReason | None  # None: usable for matching at the level asked for
    vector: np.ndarray | None  # unit embedding, when computed
    geometry: Geometry
    appearance: Appearance | None  # measured on the aligned face, when it was aligned
    liveness: float | None = None  # P(real), when asked for
    orientation: int = 0  # degrees clockwise the face lies in the image (see shared/orientation.py)


# A turn tried: its evidence, its degrees, its faces and the crops to embed.
_Turn = tuple[tuple[int, float], int, list[FaceAnalysis], list[tuple[int, np.ndarray]]]


class _Prepared(NamedTuple):
    """An image decoded, detected and aligned: everything but the embedding."""

    image: imaging.DecodedImage
    found: list[FaceAnalysis]
    aligned: list[tuple[int, np.ndarray]]  # (face index, aligned crop) to embed


_GRADED = (QualityLevel.HIGH, QualityLevel.MEDIUM, QualityLevel.LOW)

# What an image is for. Only a verify document is searched for its portrait at other turns; a
# selfie where no face is found upright is searched only to say why (TURNED: a turned selfie is
# a retake, and its liveness crop would be scored on its side); any other image is read upright.
Role = Literal["image", "selfie", "document"]


def _landmarks(points: np.ndarray) -> Landmarks:
    p = [(round(float(x), 1), round(float(y), 1)) for x, y in points]
    return Landmarks(right_eye=p[0], left_eye=p[1], nose=p[2], mouth_right=p[3], mouth_left=p[4])


def _first(reasons: list[PartialReason]) -> PartialReason | None:
    return reasons[0] if reasons else None


def _face_area(f: FaceAnalysis) -> float:
    return float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def _evidence(found: list[FaceAnalysis]) -> tuple[int, float]:
    """How strongly a turn's faces say the turn is right: a usable portrait, then its score."""
    usable = [f for f in found if f.reason is None]
    if usable:
        return 1, max(usable, key=_face_area).score
    return 0, max((f.score for f in found), default=0.0)


def _box(b: np.ndarray) -> Box:
    return Box(x1=round(float(b[0])), y1=round(float(b[1])), x2=round(float(b[2])), y2=round(float(b[3])))


class KYCDeepFace:
    """Face engine on the pinned ONNX models.

    Args:
        verify_confidence: confidence at or above which ``match_faces`` says ``verified``.
        max_image_size: (width, height) of the working image for detection; larger photos are
            downscaled for detection and their faces aligned from the full-resolution original
            (default: ``KYC_MAX_IMAGE_SIZE_PX``).
        min_image_size: (width, height) under which an image is ``INVALID_IMAGE / TOO_SMALL``
            (default: ``KYC_MIN_IMAGE_SIZE_PX``).
        model: name of the embedding model in the registry (default: ``KYC_EMBEDDING_MODEL``).
        settings: the project settings (default: from the environment).

    Raises:
        ModelError: a model file is missing, corrupt or of an unknown kind (at construction, so
            a worker fails at start-up rather than on its first job).
    """

    def __init__(
        self,
        verify_confidence: float = 0.76,
        max_image_size: tuple[int, int] | None = None,
        min_image_size: tuple[int, int] | None = None,
        model: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or get_settings()
        if model is not None:
            settings = settings.model_copy(update={"embedding_model": model})
        self.settings = settings
        self.verify_confidence = float(verify_confidence)
        max_size = max_image_size or settings.max_image_size_px
        min_size = min_image_size or settings.min_image_size_px
        self.max_image_size = (int(max_size[0]), int(max_size[1]))
        self.min_image_size = (int(min_size[0]), int(min_size[1]))
        # OpenCV's own thread pool would fight the worker processes for the same cores.
        cv2.setNumThreads(settings.onnx_threads())
        self.detector = load_detector(settings)
        self.embedder = load_embedder(settings)
        self.liveness: LivenessScorer | None = load_liveness(settings) if settings.liveness != "off" else None

    @property
    def confidence_map(self) -> calibration.ConfidenceMap:
        return calibration.load(self.embedder.spec)

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def warm_up(self) -> None:
        """Run both networks once so the first real job does not pay for lazy initialisation."""
        self.detector.detect(np.full((160, 160, 3), 128, np.uint8))
        self.embedder.embed(np.full((1, 112, 112, 3), 128, np.uint8))
        if self.liveness is not None:
            self.liveness.score(np.full((160, 160, 3), 128, np.uint8), np.array([40.0, 40.0, 120.0, 120.0]))

    # -- 1 image -> faces ----------------------------------------------------------------------

    def get_faces(
        self, image_bytes: bytes, quality: QualityLevel | str | None = None, liveness: bool = False
    ) -> FacesResult | InvalidImageResult | ErrorResult:
        """Every face in the image: usable ones with features, the rest as partial faces.

        Args:
            image_bytes: the encoded image.
            quality: which faces count as usable, as Rekognition's ``QualityFilter``: ``none``
                (every detected face), ``low`` (only what the model cannot match is refused),
                ``medium``, ``high`` (the strict gate of a verify selfie). Default
                ``KYC_QUALITY_DEFAULT`` (``low``). Every usable face reports the strictest level
                it passes and what keeps it from ``high``.
            liveness: score each usable face's liveness (needs ``KYC_LIVENESS`` other than ``off``).

        Returns:
            ``FacesResult`` (code SUCCESS, possibly with no faces), ``InvalidImageResult`` (code
            INVALID_IMAGE with a reason) or ``ErrorResult`` (code ERROR with a message).
        """
        try:
            level = QualityLevel(quality if quality is not None else self.settings.quality_default)
        except ValueError:
            known = ", ".join(q.value for q in QualityLevel)
            return ErrorResult(message=f"unknown quality level {str(quality)[:20]!r}; one of {known}")
        try:
            return self.describe(image_bytes, level, liveness)
        except KYCFaceError as exc:
            return ErrorResult.from_error(exc)
        except Exception as exc:
            # Never echo the input: it is biometric data.
            log.exception("get_faces failed unexpectedly")
            return ErrorResult.from_error(exc)

    def describe(
        self, image_bytes: bytes, level: QualityLevel | None = None, liveness: bool = False, role: Role = "image"
    ) -> FacesResult | InvalidImageResult:
        """``get_faces`` for code that handles errors itself (the job runner): an unusable image
        is still an answer, anything else raises its typed error. ``role`` says whether other
        turns of the image are searched (see :data:`Role`).

        Raises:
            KYCFaceError: a model or calibration failure.
        """
        try:
            return self._describe(self.analyse(image_bytes, level=level, liveness=liveness, role=role))
        except InvalidImageError as exc:
            return InvalidImageResult(reason=exc.reason, message=exc.message)

    def single_face(self, image_bytes: bytes, level: QualityLevel | None = None) -> Face:
        """The one usable face of an image that must show one person (a probe, a CLI argument).

        Raises:
            InvalidImageError: the image is not usable.
            FaceCountError: no usable face, or more than one.
            KYCFaceError: a model or calibration failure.
        """
        result = self.describe(image_bytes, level)
        if isinstance(result, InvalidImageResult):
            raise InvalidImageError(result.reason, result.message)
        if len(result.faces) != 1:
            raise FaceCountError(f"the image must show exactly one usable face; it shows {len(result.faces)}")
        return result.faces[0]

    def selfie_faces(self, image_bytes: bytes) -> FacesResult | InvalidImageResult:
        """``describe`` of a verify selfie: the strict gate, and liveness scored unless it is off."""
        return self.describe(
            image_bytes, self.settings.quality_selfie, liveness=self.liveness is not None, role="selfie"
        )

    def document_faces(self, image_bytes: bytes) -> FacesResult | InvalidImageResult:
        """``describe`` of an identity document: the lenient gate (a card photo has no retake), and
        the portrait searched for at other turns when the upright pass does not settle it."""
        return self.describe(image_bytes, self.settings.quality_document, role="document")

    @property
    def enforced_liveness(self) -> float | None:
        """The liveness threshold a verify decision enforces, or None when it only reports."""
        return self.settings.liveness_threshold if self.settings.liveness == "enforce" else None

    def analyse(
        self,
        image_bytes: bytes,
        embed_partial: bool = False,
        level: QualityLevel | None = None,
        liveness: bool = False,
        role: Role = "image",
    ) -> list[FaceAnalysis]:
        """Every detected face with its quality verdict and, if usable (or asked), its embedding.

        The building block of ``get_faces``; calibration uses ``embed_partial=True`` to score
        every face of a benchmark regardless of the quality gates. Raises ``KYCFaceError``s.
        """
        prepared = self._prepare(image_bytes, embed_partial, level, role)
        return self._conclude(prepared, self.embed([a for _, a in prepared.aligned]), liveness)

    def describe_many(
        self, images: list[tuple[bytes, QualityLevel | None, bool]], roles: list[Role] | None = None
    ) -> list[FacesResult | InvalidImageResult | KYCFaceError]:
        """``describe`` for several images at once: each is decoded, detected and aligned on its
        own (the detector runs per image), and the faces of consecutive images are embedded
        together, one embedder call's worth (:meth:`Settings.ort_batch_faces`) at a time.

        A group of images is concluded as soon as it holds a call's worth of faces, so no more
        decoded images are held than one call needs: holding a whole chunk's (8 photos) before
        embedding cost 3-5 % CPU per image on two busy cores (the working set falls out of cache).

        Args:
            images: ``(image bytes, quality level, liveness)`` per image, as ``describe`` takes.
            roles: per image, its ``role`` as ``describe`` takes it (default: every one ``image``).

        Returns:
            Per image, in order: what ``describe`` returns for it, or the typed error it would
            raise (one image's model failure does not fail the others).
        """
        results: dict[int, FacesResult | InvalidImageResult | KYCFaceError] = {}
        group: list[tuple[int, _Prepared, bool]] = []
        faces, step = 0, self.settings.ort_batch_faces()
        for n, (image_bytes, level, liveness) in enumerate(images):
            try:
                prepared = self._prepare(image_bytes, False, level, roles[n] if roles else "image")
            except InvalidImageError as exc:
                results[n] = InvalidImageResult(reason=exc.reason, message=exc.message)
                continue
            except KYCFaceError as exc:
                results[n] = exc
                continue
            group.append((n, prepared, liveness))
            faces += len(prepared.aligned)
            if faces >= step:
                results.update(self._conclude_group(group))
                group, faces = [], 0
        results.update(self._conclude_group(group))
        return [results[n] for n in range(len(images))]

    def _conclude_group(
        self, group: list[tuple[int, _Prepared, bool]]
    ) -> dict[int, FacesResult | InvalidImageResult | KYCFaceError]:
        """Embed the faces of prepared images together and finish each image's answer."""
        vectors = self.embed([crop for _, prepared, _ in group for _, crop in prepared.aligned])
        done: dict[int, FacesResult | InvalidImageResult | KYCFaceError] = {}
        start = 0
        for n, prepared, liveness in group:
            mine, start = vectors[start : start + len(prepared.aligned)], start + len(prepared.aligned)
            try:
                done[n] = self._describe(self._conclude(prepared, mine, liveness))
            except InvalidImageError as exc:
                done[n] = InvalidImageResult(reason=exc.reason, message=exc.message)
            except KYCFaceError as exc:
                done[n] = exc
        return done

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """Unit embeddings of aligned crops, in runs of :meth:`Settings.ort_batch_faces` per call."""
        if not crops:
            return np.zeros((0, self.embedder.spec.dim), np.float32)
        step = self.settings.ort_batch_faces()
        runs = [self.embedder.embed(np.stack(crops[i : i + step])) for i in range(0, len(crops), step)]
        return np.concatenate(runs)

    def _prepare(
        self, image_bytes: bytes, embed_partial: bool, level: QualityLevel | None, role: Role = "image"
    ) -> _Prepared:
        image = self.decode(image_bytes)
        gate = self.settings.quality_gate(level if level is not None else self.settings.quality_default)
        found, aligned = self.align_faces(image, self.detect(image), embed_partial, gate)
        if role == "selfie" and self.settings.orientation_search and not found:
            # Only where nothing was found: a face refused upright keeps its own reason.
            found, aligned = self._search_turns(image, found, aligned, embed_partial, gate, role)
        elif role == "document" and self.settings.orientation_search:
            if not self._settled(found, role, 0):
                found, aligned = self._search_turns(image, found, aligned, embed_partial, gate, role)
            else:
                found, aligned = self._straightened(image, found, aligned, 0, embed_partial, gate)
        if image.luma < self.settings.image_dark_luma and not any(f.reason is None for f in found):
            raise InvalidImageError(
                ImageReason.TOO_DARK,
                f"image mean brightness {image.luma:.1f} is under {self.settings.image_dark_luma} "
                "and no usable face was found",
            )
        return _Prepared(image, found, aligned)

    def _conclude(self, prepared: _Prepared, vectors: np.ndarray, liveness: bool) -> list[FaceAnalysis]:
        image, found = prepared.image, list(prepared.found)
        for (i, _), vec in zip(prepared.aligned, vectors, strict=True):
            found[i] = found[i]._replace(vector=vec)
        if liveness:
            if self.liveness is None:
                raise ModelError("liveness was asked for but KYC_LIVENESS is off")
            # On the working copy: the 2.7x context crop is shrunk to 128 px anyway.
            for i, f in enumerate(found):
                if f.reason is None:
                    box = f.box * image.scale
                    found[i] = f._replace(liveness=self.liveness.score(image.working, box))
        return found

    def decode(self, image_bytes: bytes) -> imaging.DecodedImage:
        return imaging.decode(image_bytes, self.settings, self.min_image_size, self.max_image_size)

    def detect(self, image: imaging.DecodedImage, degrees: int = 0) -> Detection:
        """Faces on the working copy turned back by ``degrees`` (a face lying that far clockwise
        is upright there), in original-image pixels."""
        if degrees:
            turned, back = orientation.turn(image.working, degrees)
            detection = orientation.mapped_back(self.detector.detect(turned), back)
        else:
            detection = self.detector.detect(image.working)
        return detection.scaled(1.0 / image.scale) if image.scale != 1.0 else detection

    def _settled(self, found: list[FaceAnalysis], role: Role, degrees: int) -> bool:
        """Whether the faces found at ``degrees`` leave nothing for another turn to change.

        A selfie is settled by any usable face. A document by a portrait (its largest usable
        face) that scores ``orientation_min_score`` or more with landmarks pointing up: a lower
        score may be YuNet's reading of an upside-down face (see shared/orientation.py).
        """
        usable = [f for f in found if f.reason is None]
        if role == "selfie" or not usable:
            return bool(usable)
        portrait = max(usable, key=_face_area)
        return portrait.score >= self.settings.orientation_min_score and orientation.is_upright(
            portrait.landmarks, degrees
        )

    def _search_turns(
        self,
        image: imaging.DecodedImage,
        found: list[FaceAnalysis],
        aligned: list[tuple[int, np.ndarray]],
        embed_partial: bool,
        gate: QualityGate | None,
        role: Role,
    ) -> tuple[list[FaceAnalysis], list[tuple[int, np.ndarray]]]:
        """The faces of the turn with the best evidence: a usable portrait first, then its score.

        A usable portrait found upright but under ``orientation_min_score`` can only be upside
        down, so only 180 degrees is tried; otherwise the other quarter turns (the one the
        landmarks point to first), then 45-degree steps when no quarter turn gives a usable face.
        Stops at the first settled turn. A document portrait whose card is tilted by more than
        :data:`orientation.REFINE_TILT_DEG` is detected again on a copy turned by its card's tilt.
        A selfie's faces found turned are reported as ``TURNED`` partial faces.
        """
        usable = [f for f in found if f.reason is None]
        if usable and orientation.is_upright(max(usable, key=_face_area).landmarks):
            turns = [180]
        else:
            turns = list(orientation.QUARTER_TURNS[1:])
            pointed = [orientation.implied_turn(f.landmarks) for f in found]
            if pointed and pointed[0] in turns:  # the best-scoring face's landmarks
                turns.remove(pointed[0])
                turns.insert(0, pointed[0])
        best = self._best_turn(image, turns, (_evidence(found), 0, found, aligned), embed_partial, gate, role)
        if not best[0][0]:
            best = self._best_turn(image, orientation.DIAGONALS, best, embed_partial, gate, role)
        if role == "document" and not best[0][0] and (finer := self._finer(image)) is not None:
            # A portrait too small for the working copy: YuNet needs ~25 px faces, and a card
            # that fills half a 12 MP frame leaves its portrait's face about that size.
            best = self._best_turn(finer, (0, *orientation.QUARTER_TURNS[1:]), best, embed_partial, gate, role)
            if not best[0][0]:
                best = self._best_turn(finer, orientation.DIAGONALS, best, embed_partial, gate, role)
        _, degrees, found, aligned = best
        if role == "selfie" and degrees:
            found = [f._replace(reason=PartialReason.TURNED, vector=None) for f in found]
            aligned = []
        elif role == "document" and best[0][0]:
            found, aligned = self._straightened(image, found, aligned, degrees, embed_partial, gate)
        return found, aligned

    def _best_turn(
        self,
        image: imaging.DecodedImage,
        turns: Sequence[int],
        best: _Turn,
        embed_partial: bool,
        gate: QualityGate | None,
        role: Role,
    ) -> _Turn:
        """``best``, or the first of ``turns`` with better evidence, trying them in order until
        one is settled."""
        for degrees in turns:
            faces, crops = self._at_turn(image, degrees, embed_partial, gate)
            if _evidence(faces) > best[0]:
                best = (_evidence(faces), degrees, faces, crops)
            if self._settled(faces, role, degrees):
                break
        return best

    def _finer(self, image: imaging.DecodedImage) -> imaging.DecodedImage | None:
        """The image with a working copy of twice the usual size, or None when it has no more
        pixels than the one it has."""
        if image.scale >= 1.0:
            return None
        size = (2 * self.max_image_size[0], 2 * self.max_image_size[1])
        pixels, reduction = image.source(imaging.reduction_for(2.0 * min(1.0, 2 * image.scale)))
        working, local = imaging.working_copy(pixels, size)
        return dataclasses.replace(image, working=working, scale=local / reduction)

    def _at_turn(
        self, image: imaging.DecodedImage, degrees: int, embed_partial: bool, gate: QualityGate | None
    ) -> tuple[list[FaceAnalysis], list[tuple[int, np.ndarray]]]:
        faces, crops = self.align_faces(image, self.detect(image, degrees), embed_partial, gate)
        return [f._replace(orientation=degrees) for f in faces], crops

    def _straightened(
        self,
        image: imaging.DecodedImage,
        found: list[FaceAnalysis],
        aligned: list[tuple[int, np.ndarray]],
        degrees: int,
        embed_partial: bool,
        gate: QualityGate | None,
    ) -> tuple[list[FaceAnalysis], list[tuple[int, np.ndarray]]]:
        """The faces again on a copy turned by the card's tilt, when the straight edges around the
        portrait lean more than :data:`orientation.REFINE_TILT_DEG` from ``degrees`` and that copy
        gives a usable portrait scoring at least as well; else ``found`` as it is (an untilted
        card costs no pass)."""
        portrait = max((f for f in found if f.reason is None), key=_face_area)
        x1, y1, x2, y2 = portrait.box * image.scale
        w, h = x2 - x1, y2 - y1
        height, width = image.working.shape[:2]
        region = image.working[
            max(0, int(y1 - h)) : min(height, int(y2 + h)), max(0, int(x1 - w)) : min(width, int(x2 + w))
        ]
        lean = orientation.edge_tilt(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)) if region.size else None
        if lean is None:
            return found, aligned
        tilted = orientation.nearest_turn(lean, degrees)
        if abs(tilted - degrees) <= orientation.REFINE_TILT_DEG:
            return found, aligned
        faces, crops = self._at_turn(image, round(tilted) % 360, embed_partial, gate)
        # Kept only if the detector agrees (YuNet scores a face highest near upright): edges
        # that lean in a plain photo's background must not turn its face away.
        return (faces, crops) if _evidence(faces) >= _evidence(found) else (found, aligned)

    def align_faces(
        self,
        image: imaging.DecodedImage,
        detection: Detection,
        embed_partial: bool = False,
        gate: QualityGate | None = None,
    ) -> tuple[list[FaceAnalysis], list[tuple[int, np.ndarray]]]:
        """Quality verdicts for every face under ``gate`` (None: keep all), and crops to embed.

        Geometry is judged first: a cropped or profile face is not worth warping. Faces are warped
        from pixels holding at least twice the crop's resolution (see ``DecodedImage.source``).
        """
        input_size = self.embedder.spec.input_size
        geometry = [
            Geometry.measure(detection.boxes[i], detection.landmarks[i], image.size, self.settings.crop_tolerance)
            for i in range(len(detection))
        ]
        reasons: list[PartialReason | None] = [_first(g.reasons(gate)) if gate else None for g in geometry]
        appearance: list[Appearance | None] = [None] * len(detection)
        wanted = [i for i, r in enumerate(reasons) if r is None or embed_partial]
        aligned: list[tuple[int, np.ndarray]] = []
        if wanted:
            needed = min(imaging.reduction_for(2.0 * warp_scale(detection.landmarks[i], input_size)) for i in wanted)
            pixels, reduction = image.source(needed)
            for i in wanted:
                face = align(pixels, imaging.to_reduced(detection.landmarks[i], reduction), input_size)
                look = appearance[i] = Appearance.measure(face)
                if reasons[i] is None and gate is not None:
                    reasons[i] = _first(look.reasons(gate))
                if reasons[i] is None or embed_partial:
                    aligned.append((i, face))
        found = [
            FaceAnalysis(
                detection.boxes[i],
                float(detection.scores[i]),
                detection.landmarks[i],
                reasons[i],
                None,
                geometry[i],
                appearance[i],
            )
            for i in range(len(detection))
        ]
        return found, aligned

    def grade(self, face: FaceAnalysis) -> FaceQuality:
        """The strictest level a face passes, and what keeps it from ``high``."""
        passed = "none"
        strict: list[PartialReason] = []
        for level in _GRADED:
            gate = self.settings.quality_gate(level)
            if gate is None:
                continue
            failing = face.geometry.reasons(gate) + (face.appearance.reasons(gate) if face.appearance else [])
            if level is QualityLevel.HIGH:
                strict = failing
            if not failing:
                passed = level.value
                break
        return FaceQuality(level=passed, reasons=strict)  # type: ignore[arg-type]

    def _describe(self, found: list[FaceAnalysis]) -> FacesResult:
        faces: list[Face] = []
        partial: list[PartialFace] = []
        for f in found:
            box, score, marks = _box(f.box), round(f.score, 4), _landmarks(f.landmarks)
            if f.reason is None and f.vector is not None:
                encoded = features.encode(self.model_id, f.vector)
                live = None
                if f.liveness is not None and self.liveness is not None:
                    live = Liveness(
                        score=round(f.liveness, 4),
                        live=f.liveness >= self.settings.liveness_threshold,
                        model=self.liveness.model_id,
                    )
                faces.append(
                    Face(
                        box=box,
                        score=score,
                        landmarks=marks,
                        features=encoded,
                        quality=self.grade(f),
                        liveness=live,
                        orientation=f.orientation,
                    )
                )
            elif f.reason is not None:
                partial.append(
                    PartialFace(reason=f.reason, box=box, score=score, landmarks=marks, orientation=f.orientation)
                )
        return FacesResult(faces=faces, partial_faces=partial)

    # -- 2 features -> match -------------------------------------------------------------------

    def similarity(self, features1: str | bytes, features2: str | bytes) -> float:
        """Cosine similarity of two features strings of this engine's model (raises FeaturesError)."""
        fa, fb = features.decode_pair(features1, features2)
        if fa.model_id != self.model_id:
            raise FeaturesError(f"features come from model {fa.model_id!r}; this engine uses {self.model_id!r}")
        return float(np.clip(np.dot(fa.vector, fb.vector), -1.0, 1.0))

    def match_faces(self, features1: Any, features2: Any) -> MatchResult | ErrorResult:
        """Compare two features strings.

        Returns:
            ``MatchResult`` with ``confidence`` in [0, 1] (the calibrated map of cosine similarity)
            and ``verified = confidence >= verify_confidence``; ``ErrorResult`` for malformed
            features or features of different models.
        """
        try:
            return self.compare(features1, features2)
        except KYCFaceError as exc:
            return ErrorResult.from_error(exc)
        except Exception as exc:
            log.exception("match_faces failed unexpectedly")
            return ErrorResult.from_error(exc)

    def compare(self, features1: Any, features2: Any) -> MatchResult:
        """``match_faces`` for code that handles errors itself.

        Raises:
            FeaturesError: malformed features, or features of different models.
        """
        cosine = self.similarity(features1, features2)
        confidence = round(float(self.confidence_map.confidence(cosine)), 6)
        return MatchResult(confidence=confidence, verified=confidence >= self.verify_confidence)
