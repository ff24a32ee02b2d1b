"""train.loggers: the training loop's numbers go to registered sinks, so a plugin adds one
(TensorBoard, W&B) without touching the trainer; the default writes vdl/ and metrics.json."""
import json
import os
from typing import Any, Dict, List

import paddle
import pytest

from conftest import tiny_train_config
from passl_mixer import LOGGERS, Sink
from passl_mixer.engine.trainer import Trainer
from passl_mixer.errors import ConfigError


class RecordingSink(Sink):
    """What a plugin would register: keeps everything it is given."""

    def __init__(self, output_dir: str, tag: str = "rec"):
        self.output_dir, self.tag = output_dir, tag
        self.scalar_calls: List = []
        self.records: List[Dict[str, Any]] = []
        self.history = None
        self.closed = False

    def begin(self, history):
        self.history = list(history)

    def scalars(self, step, values):
        self.scalar_calls.append((step, dict(values)))

    def evaluation(self, record):
        self.records.append(dict(record))

    def close(self):
        self.closed = True


@pytest.fixture
def recording_sink():
    LOGGERS.register(RecordingSink)
    yield RecordingSink
    LOGGERS._entries.pop("RecordingSink")


def test_a_plugin_sink_receives_scalars_and_evaluations(tiny_data, tmp_path, recording_sink):
    out = str(tmp_path / "run")
    cfg = tiny_train_config(tiny_data, out, epochs=2,
                            loggers=[{"name": "RecordingSink", "tag": "mine"}])
    trainer = Trainer(cfg)
    [sink] = trainer.sinks
    assert isinstance(sink, RecordingSink) and sink.tag == "mine" and sink.output_dir == out
    result = trainer.train()

    assert sink.history == [] and sink.closed
    train_steps = [step for step, values in sink.scalar_calls if "train/loss" in values]
    assert train_steps == list(range(2, trainer.global_step + 1, 2))
    train_values = next(v for _, v in sink.scalar_calls if "train/loss" in v)
    assert set(train_values) == {"train/loss", "train/train_acc1", "train/lr", "train/img_per_s"}
    val_calls = [(step, v) for step, v in sink.scalar_calls if "val/top1" in v]
    assert [set(v) for _, v in val_calls] == [{"val/top1", "val/top5", "val/loss"}] * 2
    assert [r["epoch"] for r in sink.records] == [1, 2]
    assert sink.records == result["history"]
    assert [step for step, _ in val_calls] == [r["step"] for r in sink.records]
    assert [v["val/top1"] for _, v in val_calls] == [r["top1"] for r in sink.records]
    # only the named sinks run: no VisualDL folder, no metrics.json
    assert not os.path.exists(os.path.join(out, "vdl"))
    assert not os.path.exists(os.path.join(out, "metrics.json"))


def test_default_sinks_write_vdl_and_metrics_json(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    with paddle.utils.unique_name.guard():  # the same parameter names in both runs
        first = Trainer(tiny_train_config(tiny_data, out, epochs=1))
        assert [type(s).__name__ for s in first.sinks] == ["VisualDL", "MetricsJson"]
        first.train()
    # resumed: metrics.json holds the checkpoint's evaluations, then the new ones
    with paddle.utils.unique_name.guard():
        result = Trainer(tiny_train_config(tiny_data, out, epochs=2), resume="auto").train()
    with open(os.path.join(out, "metrics.json")) as f:
        written = f.read()
    assert written == json.dumps(result["history"], indent=1)
    assert [r["epoch"] for r in json.loads(written)] == [1, 2]
    assert any(name.startswith("vdlrecords") for name in os.listdir(os.path.join(out, "vdl")))


@pytest.mark.parametrize("loggers, path", [
    ([{"name": "VisualDL"}, {"name": "TensorBoardd"}], "train.loggers[1].name"),
    ([{"name": "MetricsJson", "filename": "m.json"}], "train.loggers[0]"),
    ([{"tag": "x"}], "train.loggers[0]"),
])
def test_bad_logger_entry_is_a_config_error_naming_it(tiny_data, tmp_path, loggers, path):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), loggers=loggers)
    with pytest.raises(ConfigError) as info:
        Trainer(cfg)
    assert path in str(info.value)
