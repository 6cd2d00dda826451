"""The yardstick every learned map must beat: a plain intensity rule, no network.

``intensity``: |x - median| / MAD of the scan's normalised intensities inside its foreground, in
the model's space (same registration, normalisation, back-mapping, post-processing and
calibration as every other score). Meissen et al. (2021) showed that on brain MRI such a rule is
hard to beat; a score that does not beat it on the same cases is not worth its network. A
baseline to measure against, not a model to ship.
"""

from __future__ import annotations

import numpy as np

#: Scale of the median absolute deviation to a normal distribution's standard deviation.
MAD_TO_SIGMA = 1.4826


def intensity_deviation(slices: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """|x - median| / (1.4826 * MAD) of a stack of normalised slices; the statistics come from its
    foreground voxels (the whole scan, not one slice), and the map is 0 outside the foreground."""
    inside = np.asarray(foreground, dtype=bool)
    values = slices[inside]
    if values.size == 0:
        return np.zeros(slices.shape, dtype=np.float32)
    median = float(np.median(values))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    spread = spread if spread > 1e-6 else max(float(values.std()), 1e-6)
    return np.where(inside, np.abs(slices - median) / spread, 0.0).astype(np.float32)
