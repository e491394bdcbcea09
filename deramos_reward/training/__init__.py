"""Training DeRA-MOS heads: one ``TrainConfig``, cached frozen-encoder features, accelerate.

```python
from deramos_reward.training import TrainConfig, train
result = train(TrainConfig(model="tiny", max_epochs=30, lr=1e-3), "corpus/", "runs/tiny")
```
"""

from __future__ import annotations

from .config import TrainConfig
from .features import ClipFeatures, FeatureSet, cached_feature_set, extract_features, heads_forward
from .trainer import CHECKPOINTS, TrainResult, predict_features, train

__all__ = [
    "CHECKPOINTS",
    "ClipFeatures",
    "FeatureSet",
    "TrainConfig",
    "TrainResult",
    "cached_feature_set",
    "extract_features",
    "heads_forward",
    "predict_features",
    "train",
]
