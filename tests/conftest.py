import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

# A Mixer small enough that a forward/backward pass takes milliseconds.
TINY_BACKBONE = dict(name="MlpMixer", patch_size=4, hidden_dim=32, num_blocks=2,
                     tokens_mlp_dim=16, channels_mlp_dim=64, img_size=16)


@pytest.fixture
def tiny_backbone_cfg():
    return dict(TINY_BACKBONE)


@pytest.fixture
def tiny_classifier_cfg():
    return dict(name="ImageClassifier", backbone=dict(TINY_BACKBONE),
                head=dict(name="LinearClsHead", num_classes=10, in_channels=32))
