"""Helpers shared by the gallery benchmarks: the machine description."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import command_line, write_section


def machine() -> str:
    """Date, command, core count and the head of ``lscpu``, as a Markdown paragraph and block."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()[:20]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = command_line(sys.argv[0])
    # The machine is shared: the load average says how much else ran during the measurement.
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{when}. Command: `{command}`. `nproc` = {os.cpu_count()}; Python {platform.python_version()} "
        f"on {platform.machine()}; load average at the end {load} (1/5/15 min).\n\n```\n" + "\n".join(lscpu) + "\n```\n"
    )


def publish(text: str, results: Path | None, heading: str) -> int:
    """Print a benchmark's report and, given a Markdown file, replace its ``heading`` section; 0."""
    print(text)
    if results:
        write_section(results, heading, text)
    return 0


def lfw_faces(engine: Any, paths: list[Path]) -> tuple[np.ndarray, list[Path]]:
    """Unit embeddings of the face nearest the centre of each LFW image (250x250 crops centred
    on one person; quality gates off, as in ``bench/calibrate.py``), and the images that had one."""
    vectors, kept = [], []
    centre = np.array([125.0, 125.0])
    for path in paths:
        faces = [f for f in engine.analyse(path.read_bytes(), embed_partial=True) if f.vector is not None]
        if faces:
            best = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
            vectors.append(best.vector)
            kept.append(path)
    return np.stack(vectors).astype(np.float32), kept


def lfw_embeddings(lfw: Path, model: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors, identity names) of every ``lfw`` image with a face, embedded by ``model``.

    Cached in ``cache`` (.npz) so reruns take seconds.
    """
    if cache.is_file():
        data = np.load(cache)
        return data["vectors"], data["names"]
    from shared.config import Settings
    from shared.engine import KYCDeepFace

    engine = KYCDeepFace(settings=Settings(embedding_model=model))
    vectors, kept = lfw_faces(engine, sorted((lfw / "images").glob("*/*.jpg")))
    names = np.array([path.parent.name for path in kept])
    np.savez(cache, vectors=vectors, names=names)
    return vectors, names


def split_identities(names: np.ndarray, seed: int = 0) -> np.ndarray:
    """A boolean mask putting about half of the identities (all their images) on the True side."""
    identities = np.unique(names)
    chosen = set(np.random.default_rng(seed).permutation(identities)[: len(identities) // 2])
    return np.array([n in chosen for n in names])


class FacePopulation:
    """Synthetic templates with the second moments of real embeddings of one model.

    Identity centres are drawn from the between-identity scatter of the real vectors and each
    sample adds the within-identity scatter (measured on identities with several images), so
    stranger cosines and same-identity cosines both follow the model's real distributions
    (``describe`` prints them beside the real ones). Built by :meth:`fitted` (or, without a
    model, :meth:`synthetic`).

    Args:
        mean: (D,) mean template.
        between: (D, D) factor of the between-identity covariance.
        within: (D, D) factor of the within-identity covariance.
    """

    def __init__(self, mean: np.ndarray, between: np.ndarray, within: np.ndarray, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = len(mean)
        self.mean, self.between, self.within = mean.astype(np.float32), between, within

    @classmethod
    def fitted(cls, vectors: np.ndarray, names: np.ndarray, seed: int = 0) -> FacePopulation:
        """The population of a model's real unit ``vectors`` (n, D) with their identity ``names``."""
        x = vectors.astype(np.float64)
        deviations = []
        for name in np.unique(names):
            rows = x[names == name]
            if len(rows) >= 2:
                # n / (n - 1) undoes the shrinkage of deviations from a mean of n samples.
                deviations.append((rows - rows.mean(axis=0)) * np.sqrt(len(rows) / (len(rows) - 1)))
        d = np.vstack(deviations)
        within = d.T @ d / len(d)
        return cls(x.mean(axis=0), cls._factor(np.cov(x.T) - within), cls._factor(within), seed)

    @classmethod
    def synthetic(cls, dim: int = 128, seed: int = 0) -> FacePopulation:
        """A model-free stand-in: anisotropic centres around a common mean, stranger cosines
        ~0.01 / sd ~0.1 and same-identity cosines ~0.6, as real face embeddings have."""
        rng = np.random.default_rng(seed)
        spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -0.3
        basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        between = basis * (spectrum / np.sqrt((spectrum**2).sum()))
        mean = rng.standard_normal(dim)
        # |centre - mean| ~ 1 and per-sample noise of norm ~0.8: same-identity cosine ~1 / (1 + 0.8^2).
        within = np.eye(dim) * 0.8 / np.sqrt(dim)
        return cls(mean * 0.12 / np.linalg.norm(mean), between.astype(np.float32), within.astype(np.float32), seed)

    @staticmethod
    def _factor(cov: np.ndarray) -> np.ndarray:
        """F with F F^T = cov (negative eigenvalues of an estimated difference clipped to 0)."""
        w, v = np.linalg.eigh(cov)
        return (v * np.sqrt(np.clip(w, 0, None))).astype(np.float32)

    def _gauss(self, n: int, factor: np.ndarray) -> np.ndarray:
        return self.rng.standard_normal((n, self.dim), dtype=np.float32) @ factor.T

    def centres(self, n: int) -> np.ndarray:
        """(n, D) identity centres (not normalised: a sample is normalised after adding its noise)."""
        return self.mean + self._gauss(n, self.between)

    def samples(self, centres: np.ndarray) -> np.ndarray:
        out = np.empty_like(centres)
        for start in range(0, len(centres), 100_000):
            part = centres[start : start + 100_000]
            # Photos differ in how far they stray from the person (pose, light, age): a per-sample
            # noise scale, mean square 1, spreads same-identity cosines as real ones are spread.
            scale = self.rng.uniform(0.4, 1.4, (len(part), 1)).astype(np.float32) / np.sqrt(0.893)
            x = part + scale * self._gauss(len(part), self.within)
            out[start : start + len(part)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    def gallery(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(templates, identity centre of each), ~10 % of identities enrolled 2-4 times."""
        n_ids = max(1, int(n / 1.2))
        centres = self.centres(n_ids)
        owner = np.concatenate([np.arange(n_ids), self.rng.integers(0, n_ids, n - n_ids)])
        self.rng.shuffle(owner)
        return self.samples(centres[owner]), centres[owner]

    def gallery_into(self, out: np.ndarray, picks: int) -> np.ndarray:
        """Fill ``out`` (n, D) with templates as :meth:`gallery` makes them, and return the identity
        centres of ``picks`` random templates among them (for mated queries).

        Templates are drawn in pieces and the identity centres kept in float16 (they only seed
        samples), so a 2M x 512 gallery needs its own 4 GB and 1.7 GB more, not four copies.
        """
        n = len(out)
        n_ids = max(1, int(n / 1.2))
        centres = np.empty((n_ids, self.dim), np.float16)
        for start in range(0, n_ids, 100_000):
            centres[start : start + 100_000] = self.centres(min(100_000, n_ids - start))
        owner = np.concatenate([np.arange(n_ids), self.rng.integers(0, n_ids, n - n_ids)])
        self.rng.shuffle(owner)
        for start in range(0, n, 100_000):
            out[start : start + 100_000] = self.samples(centres[owner[start : start + 100_000]].astype(np.float32))
        return centres[owner[self.rng.integers(0, n, picks)]].astype(np.float32)

    def describe(self, vectors: np.ndarray, names: np.ndarray) -> str:
        """Stranger and same-identity cosine mean / sd, real beside synthetic."""
        same = names[:, None] == names[None, :]
        upper = np.triu(np.ones_like(same), 1)
        sims = vectors @ vectors.T
        real_imp, real_gen = sims[upper & ~same], sims[upper & same]
        centres = self.centres(2000)
        a, b = self.samples(centres), self.samples(centres)
        syn_gen = (a * b).sum(axis=1)
        syn_imp = (a[:1000] @ b[1000:].T).ravel()
        return (
            f"stranger cosine mean {real_imp.mean():.3f} sd {real_imp.std():.3f} real, {syn_imp.mean():.3f} / "
            f"{syn_imp.std():.3f} synthetic; same identity {real_gen.mean():.3f} / {real_gen.std():.3f} real, "
            f"{syn_gen.mean():.3f} / {syn_gen.std():.3f} synthetic"
        )
