"""Training DeRA-MOS heads: one ``TrainConfig``, cached frozen-encoder features, accelerate.

```python
from deramos_reward.training import TrainConfig, train
result = train(TrainConfig(model="tiny", max_epochs=30, lr=1e-3), "corpus/", "runs/tiny")
```
"""

from __future__ import annotations

from deramos_reward._lazy import lazy_getattr

# Imported on first use, so reading a TrainConfig (the ``deramos`` command line) does not load the
# trainer and the metrics.
_LAZY = {
    "TrainConfig": "config",
    "DEMO_RECIPE": "config",
    "ClipFeatures": "features",
    "FeatureSet": "features",
    "cached_feature_set": "features",
    "extract_features": "features",
    "heads_forward": "features",
    "CHECKPOINTS": "trainer",
    "TrainResult": "trainer",
    "predict_features": "trainer",
    "train": "trainer",
}

__all__ = [
    "CHECKPOINTS",
    "ClipFeatures",
    "DEMO_RECIPE",
    "FeatureSet",
    "TrainConfig",
    "TrainResult",
    "cached_feature_set",
    "extract_features",
    "heads_forward",
    "predict_features",
    "train",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
