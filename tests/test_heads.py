import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import passl_mixer as pm


def test_cross_entropy_with_label_smoothing_matches_formula():
    paddle.seed(0)
    logits = paddle.randn([6, 5])
    labels = paddle.to_tensor([0, 1, 2, 3, 4, 0])
    eps = 0.1
    loss = pm.build_loss({"name": "CrossEntropyLoss", "label_smoothing": eps})(logits, labels)
    logp = F.log_softmax(logits, -1).numpy()
    target = np.full((6, 5), eps / 5)
    target[np.arange(6), labels.numpy()] += 1 - eps
    np.testing.assert_allclose(float(loss), -(target * logp).sum(1).mean(), rtol=1e-5)
    plain = pm.build_loss({"name": "CrossEntropyLoss"})(logits, labels)
    np.testing.assert_allclose(float(plain), -logp[np.arange(6), labels.numpy()].mean(), rtol=1e-5)


def test_soft_target_cross_entropy():
    logits = paddle.randn([4, 3])
    soft = paddle.to_tensor(np.array([[0.7, 0.3, 0], [0, 1, 0], [0.2, 0.2, 0.6], [1, 0, 0]],
                                     dtype="float32"))
    expected = -(soft.numpy() * F.log_softmax(logits, -1).numpy()).sum(1).mean()
    for name in ("SoftTargetCrossEntropy", "CrossEntropyLoss"):
        loss = pm.build_loss({"name": name})(logits, soft)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="soft targets"):
        pm.build_loss({"name": "SoftTargetCrossEntropy"})(logits, paddle.to_tensor([0, 1, 2, 0]))


def test_classifier_contract(tiny_classifier_cfg):
    tiny_classifier_cfg["head"]["loss"] = {"name": "CrossEntropyLoss", "label_smoothing": 0.1}
    model = pm.build_model(tiny_classifier_cfg)
    x = paddle.randn([4, 3, 16, 16])
    logits = model(x)
    assert logits.shape == [4, 10]
    assert np.all(logits.numpy() == 0)  # zero-initialised head
    out = model(x, paddle.to_tensor([1, 2, 3, 4]))
    assert set(out) == {"loss", "acc1", "acc5"}
    np.testing.assert_allclose(float(out["loss"]), np.log(10), rtol=1e-5)  # uniform prediction
    out["loss"].backward()
    assert model.head.fc.weight.grad is not None
    model.reset_classifier(3)
    assert model(x).shape == [4, 3] and model.num_classes == 3


def test_topk_accuracy():
    from passl_mixer.models.heads.linear_cls_head import topk_accuracy
    logits = paddle.to_tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(logits, paddle.to_tensor([1, 2, 1]), topk=(1, 2, 5))
    assert float(acc["acc1"]) == pytest.approx(100 / 3, rel=1e-5)
    assert float(acc["acc2"]) == pytest.approx(200 / 3, rel=1e-5)
    assert float(acc["acc5"]) == pytest.approx(100.0)
