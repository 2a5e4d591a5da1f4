"""BYOLAConfig: validation of its fields, and former field names that still load with a warning."""

import shutil

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


def test_former_config_names_still_load_with_a_warning(small_model, tmp_path):
    """Directories saved before the names agreed with transformers' (sample_rate, freeze_base) load as before."""
    import json

    old = tmp_path / "old"
    shutil.copytree(small_model, old)
    config = json.loads((old / "config.json").read_text())
    config["sample_rate"] = config.pop("sampling_rate")
    config["freeze_base"] = config.pop("freeze_base_model")
    (old / "config.json").write_text(json.dumps(config))
    with pytest.warns(FutureWarning, match="use sampling_rate"):
        loaded = BYOLAConfig.from_pretrained(old)
    assert loaded.sampling_rate == 16000 and loaded.freeze_base_model is True
    with pytest.warns(FutureWarning, match="use sampling_rate"):
        assert loaded.sample_rate == 16000
