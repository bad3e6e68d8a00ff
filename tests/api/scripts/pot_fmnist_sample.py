"""A script written for the original POT API (2022.1-2023.3), as its samples were: a DataLoader, an
accuracy Metric, IEEngine, DefaultQuantization, then AccuracyAwareQuantization at maximal_drop 0.004.

The test runs it with only its import line changed (``openvino.tools.pot`` -> ``pot_cli.api``).
Usage: pot_fmnist_sample.py MODEL.xml FASHION_MNIST_DIR OUT_DIR new|old (the DataLoader item order).
"""
import sys
from pathlib import Path

import cv2
import numpy as np
from openvino.tools.pot import (DataLoader, IEEngine, Metric, compress_model_weights, create_pipeline, load_model,
                                save_model)

MODEL, DATA, OUT, ORDER = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]


class FashionLoader(DataLoader):
    def __init__(self, config):
        super().__init__(config)
        lines = (Path(config["data_source"]) / "val.txt").read_text().split("\n")
        self.items = [(l.split()[0], int(l.split()[1])) for l in lines if l.strip()][: config["limit"]]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        name, label = self.items[index]
        image = cv2.imread(str(Path(self.config["data_source"]) / "val" / name), cv2.IMREAD_GRAYSCALE)
        image = image.astype(np.float32)[None]  # (1, 28, 28)
        if self.config["order"] == "old":
            return (index, label), image
        return image, label


class Accuracy(Metric):
    def __init__(self):
        self._name = "accuracy@top1"
        self._matches = []
        super().__init__()

    @property
    def value(self):
        return {self._name: [self._matches[-1]]}

    @property
    def avg_value(self):
        return {self._name: float(np.mean(self._matches))}

    def update(self, output, target):
        predict = np.argmax(output[0], axis=1)
        self._matches.extend(float(p == t) for p, t in zip(predict, target))

    def reset(self):
        self._matches = []

    def get_attributes(self):
        return {self._name: {"direction": "higher-better", "type": "accuracy"}}


model_config = {"model_name": "fmnist_cnn", "model": MODEL, "weights": MODEL.with_suffix(".bin")}
engine_config = {"device": "CPU"}
loader = FashionLoader({"data_source": str(DATA), "limit": 1000, "order": ORDER})
metric = Accuracy()
engine = IEEngine(config=engine_config, data_loader=loader, metric=metric)

default = [{"name": "DefaultQuantization", "params": {"target_device": "ANY", "preset": "performance",
                                                       "stat_subset_size": 300}}]
model = load_model(model_config)
pipeline = create_pipeline(default, engine)
int8 = pipeline.run(model)
compress_model_weights(int8)
paths = save_model(int8, str(OUT / "default"), model_name="fmnist_default")
print("default", paths[0]["model"], pipeline.evaluate(int8)["accuracy@top1"])

aa = [{"name": "AccuracyAwareQuantization", "params": {"target_device": "ANY", "preset": "performance",
                                                        "stat_subset_size": 300, "maximal_drop": 0.004}}]
fp_metrics = create_pipeline(dict(), engine).evaluate(load_model(model_config))
model = load_model(model_config)
pipeline = create_pipeline(aa, engine)
int8 = pipeline.run(model)
compress_model_weights(int8)
paths = save_model(int8, str(OUT / "aa"), model_name="fmnist_aa")
int8_metrics = pipeline.evaluate(int8)
for name, value in fp_metrics.items():
    print(f"{'FP32 ' + name: <27s}: {value}")
for name, value in int8_metrics.items():
    print(f"{'INT8 ' + name: <27s}: {value}")
print("aa", paths[0]["model"], fp_metrics["accuracy@top1"], int8_metrics["accuracy@top1"])
