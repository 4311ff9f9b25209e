"""Does a generated tile follow its sketch? A simple land-cover classifier trained on the dataset's own tiles.

The classifier looks at square patches of a tile on the model's grey scale (8 px at the model's
size) and describes each by three numbers: mean grey level, its standard deviation (speckle and
texture) and the mean gradient magnitude (edges, buildings). One Gaussian per class (full
covariance, as in quadratic discriminant analysis) is fitted to the patches of the dataset's
land-cover tiles whose pixels mostly (≥ 60 %) belong to one class; classes that radar tells apart
are kept (water, field incl. roads, forest, urban incl. buildings). Adherence of an output to its
sketch = the share of the sketch's clearly labelled patches whose class the classifier recognises
in the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sar_pipeline.archive.landcover import BUILDING, FIELD, FOREST, ROAD, URBAN, WATER
from sar_pipeline.errors import SarPipelineError

#: side of the classified patches, in pixels at the model's size
PATCH_PX = 8
#: a patch is labelled when at least this share of its pixels has one class
MAJORITY = 0.6
#: land-cover class → the class the classifier tells apart
CLASS_GROUPS = {WATER: WATER, FIELD: FIELD, ROAD: FIELD, FOREST: FOREST, URBAN: URBAN, BUILDING: URBAN}


def patch_features(grey: np.ndarray, patch: int = PATCH_PX) -> np.ndarray:
    """(patch rows, patch cols, 3): mean, std and mean gradient magnitude of each patch of ``grey``."""
    g = np.asarray(grey, np.float64)
    rows, cols = g.shape[0] // patch, g.shape[1] // patch
    g = g[: rows * patch, : cols * patch]
    gy, gx = np.gradient(g)
    grad = np.hypot(gx, gy)

    def blocks(a):
        return a.reshape(rows, patch, cols, patch).swapaxes(1, 2).reshape(rows, cols, patch * patch)

    b = blocks(g)
    return np.stack([b.mean(-1), b.std(-1), blocks(grad).mean(-1)], axis=-1)


def patch_labels(classes: np.ndarray, patch: int = PATCH_PX) -> np.ndarray:
    """(patch rows, patch cols) grouped class of each patch, -1 where no class holds ≥ 60 %."""
    c = np.asarray(classes)
    rows, cols = c.shape[0] // patch, c.shape[1] // patch
    grouped = np.full(c.shape, -1, np.int32)
    for code, group in CLASS_GROUPS.items():
        grouped[c == code] = group
    b = grouped[: rows * patch, : cols * patch].reshape(rows, patch, cols, patch).swapaxes(1, 2)
    b = b.reshape(rows, cols, patch * patch)
    labels = np.full((rows, cols), -1, np.int32)
    for group in sorted(set(CLASS_GROUPS.values())):
        share = (b == group).mean(-1)
        labels[share >= MAJORITY] = group
    return labels


@dataclass
class LandCoverClassifier:
    """Gaussian class models of patch features; :meth:`predict` gives the most likely class."""

    classes: np.ndarray
    means: np.ndarray
    inv_covs: np.ndarray
    log_norms: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> LandCoverClassifier:
        """Fit on patch ``features`` (n, 3) and their class ``labels`` (n,) (-1 ignored)."""
        keep = labels >= 0
        x, y = features[keep], labels[keep]
        classes = np.array(sorted(c for c in set(y.tolist()) if (y == c).sum() >= 5))
        if len(classes) < 2:
            raise SarPipelineError(
                "adherence classifier", "fewer than two land-cover classes with labelled patches"
            )
        means, inv_covs, log_norms = [], [], []
        ridge = 1e-4 * np.eye(x.shape[1]) * max(float(x.var(axis=0).mean()), 1e-6)
        for c in classes:
            xc = x[y == c]
            cov = np.cov(xc, rowvar=False) + ridge
            means.append(xc.mean(0))
            inv_covs.append(np.linalg.inv(cov))
            log_norms.append(-0.5 * np.linalg.slogdet(cov)[1])
        return cls(classes, np.array(means), np.array(inv_covs), np.array(log_norms))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class of each feature vector (any leading shape, last axis 3)."""
        x = features.reshape(-1, features.shape[-1])
        d = x[:, None, :] - self.means[None]
        mahal = np.einsum("nci,cij,ncj->nc", d, self.inv_covs, d)
        return self.classes[np.argmax(self.log_norms - 0.5 * mahal, axis=1)].reshape(features.shape[:-1])


def train_classifier(greys: list[np.ndarray], classes: list[np.ndarray]) -> LandCoverClassifier:
    """Fit the classifier on tiles (grey [0, 1] at the model's size) and their land-cover codes."""
    feats = [patch_features(g).reshape(-1, 3) for g in greys]
    labels = [patch_labels(c).reshape(-1) for c in classes]
    return LandCoverClassifier.fit(np.concatenate(feats), np.concatenate(labels))


def agreement(classifier: LandCoverClassifier, grey: np.ndarray, classes: np.ndarray) -> tuple[int, int]:
    """(patches where the class recognised in ``grey`` is the sketch's, labelled patches of the sketch)."""
    labels = patch_labels(classes)
    predicted = classifier.predict(patch_features(grey))
    known = labels >= 0
    return int((predicted[known] == labels[known]).sum()), int(known.sum())
