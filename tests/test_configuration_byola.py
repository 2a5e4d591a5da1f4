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
    with pytest.raises(ValueError, match="f_max <= sampling_rate / 2"):
        BYOLAConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="feature_d must be a positive integer"):
        BYOLAConfig(feature_d=0)
