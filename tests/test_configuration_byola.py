"""BYOLAConfig: validation of its fields, and former field names that still load with a warning."""

import pytest

from byola_hf import BYOLAConfig


def test_config_validation():
    with pytest.raises(ValueError, match="both normalisation statistics or neither"):
        BYOLAConfig(mean=-9.0)
    with pytest.raises(ValueError, match="`std` must be positive"):
        BYOLAConfig(mean=-9.0, std=0.0)
    with pytest.raises(ValueError, match="must be a finite number"):
        BYOLAConfig(mean=float("nan"), std=1.0)
    # Finite in float64, useless in the float32 the model computes in (a trial found 1e-40 accepted).
    with pytest.raises(ValueError, match="below float32's smallest normal number"):
        BYOLAConfig(mean=-9.0, std=1e-40)
    with pytest.raises(ValueError, match="beyond float32's range"):
        BYOLAConfig(mean=-1e39, std=1.0)
    with pytest.raises(ValueError, match="f_max <= sampling_rate / 2"):
        BYOLAConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="feature_d must be a positive integer"):
        BYOLAConfig(feature_d=0)
