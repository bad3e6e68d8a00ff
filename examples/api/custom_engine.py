"""DefaultQuantization with your own inference loop: a custom ``Engine`` that runs the model with OpenVINO.

    python examples/api/custom_engine.py            # the bundled digits model and images

The pipeline calls ``engine.predict(stats_layout, sampler, stat_aliases)`` with a model that has
every tensor it needs statistics of as an extra output; the engine runs it sample by sample and
hands each sample's outputs to ``append_stats``. ``pipeline.evaluate`` calls ``predict()`` alone.
"""
import argparse
import os

import cv2
import numpy as np
import openvino as ov

from pot_cli.api import (BatchSampler, DataLoader, Engine, Metric, append_stats, compress_model_weights,
                         create_pipeline, load_model, output_key, process_accumulated_stats, save_model)

DIGITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'digits')


class DigitsLoader(DataLoader):
    """``(image (1, 28, 28) float32, label)`` from a folder and its ``<file> <label>`` list."""

    def __init__(self, images, annotation_file, subset=0):
        super().__init__()
        self._images = images
        with open(annotation_file) as f:
            self._items = [(name, int(label)) for name, label in (line.split() for line in f if line.strip())]
        self._items = self._items[:subset or None]

    def __len__(self):
        return len(self._items)

    def __getitem__(self, index):
        name, label = self._items[index]
        image = cv2.imread(os.path.join(self._images, name), cv2.IMREAD_GRAYSCALE)
        return image[None].astype(np.float32), label


class Accuracy(Metric):
    def __init__(self):
        super().__init__()
        self._name = 'accuracy@top1'

    @property
    def avg_value(self):
        return {self._name: float(np.mean(self._matches)) if self._matches else 0.0}

    def update(self, output, target):
        self._matches += [float(p == t) for p, t in zip(np.argmax(output[0], axis=1), target)]

    def reset(self):
        self._matches = []

    def get_attributes(self):
        return {self._name: {'direction': 'higher-better', 'type': 'accuracy'}}


class OpenVINOEngine(Engine):
    """Runs the current model (``self._model.model``, an ``ov.Model``) on CPU, one sample at a time.

    ``metric_per_sample`` and ``print_progress`` are left out: DefaultQuantization does not ask for
    them (AccuracyAwareQuantization does, and needs an ``IEEngine``).
    """

    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        # f32 precision: statistics and the FP32 baseline must not be computed in bf16
        compiled = ov.Core().compile_model(self._model.model, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
        request = compiled.create_infer_request()
        sampler = sampler or BatchSampler(self.data_loader)
        accumulated = {}
        if self._metric is not None:
            self._metric.reset()
        for index in sampler.subset_indices:  # dataset indices, in order
            image, label = self.data_loader[index]
            result = request.infer({0: image[None]})  # add the batch dimension
            outputs = {output_key(o): result[o] for o in compiled.outputs}
            if stats_layout:
                append_stats(accumulated, stats_layout, outputs, index)
            elif self._metric is not None:  # evaluation: outputs are the model's own, in model order
                self._metric.update(list(outputs.values()), [label])
        metrics = self._metric.avg_value if self._metric is not None and not stats_layout else None
        return metrics, process_accumulated_stats(accumulated)


def count_fake_quantize(xml):
    return sum(op.get_type_name() == 'FakeQuantize' for op in ov.Core().read_model(xml).get_ops())


def main():
    parser = argparse.ArgumentParser(description='DefaultQuantization with a custom engine')
    parser.add_argument('-m', '--model', default=os.path.join(DIGITS, 'model', 'digits_cnn.xml'))
    parser.add_argument('-d', '--data-source', default=os.path.join(DIGITS, 'images', 'val'))
    parser.add_argument('-a', '--annotation-file', default=os.path.join(DIGITS, 'images', 'val.txt'))
    parser.add_argument('--subset', type=int, default=0, help='use only the first N images (0: all)')
    parser.add_argument('-o', '--output-dir', default='results/custom_engine', help='where the INT8 IR goes')
    args = parser.parse_args()

    name = os.path.splitext(os.path.basename(args.model))[0]
    model = load_model({'model_name': name, 'model': args.model})
    engine = OpenVINOEngine(config={}, data_loader=DigitsLoader(args.data_source, args.annotation_file, args.subset),
                            metric=Accuracy())
    algorithms = [{'name': 'DefaultQuantization',
                   'params': {'target_device': 'ANY', 'preset': 'performance', 'stat_subset_size': 300}}]
    pipeline = create_pipeline(algorithms, engine)

    fp32 = pipeline.evaluate(model)
    int8_model = pipeline.run(model)
    int8 = pipeline.evaluate(int8_model)
    compress_model_weights(int8_model)
    xml = save_model(int8_model, args.output_dir, model_name=name)[0]['model']

    print(f'INT8 model: {xml} ({count_fake_quantize(xml)} FakeQuantize ops)')
    for title, metrics in (('FP32', fp32), ('INT8', int8)):
        for name, value in metrics.items():
            print(f'{title + " " + name: <27s}: {value}')


if __name__ == '__main__':
    main()
