"""Quantize an image classifier with the Python API, in the style of the original POT samples.

    python examples/api/classification.py -m examples/digits/model/digits_cnn.xml \
        -d examples/digits/images/val -a examples/digits/images/val.txt

DefaultQuantization first; if its accuracy drop is larger than --max-drop, AccuracyAwareQuantization
starts again from the FP32 model and keeps the most harmful layers in floating point.
Written for ``openvino.tools.pot``: only the ``pot_cli.api`` import line differs.
"""
import argparse
import os

import cv2
import numpy as np
import openvino as ov

from pot_cli.api import DataLoader, IEEngine, Metric, compress_model_weights, create_pipeline, load_model, save_model

TOP1 = 'accuracy@top1'


class ClassificationDataLoader(DataLoader):
    """Images of ``data_dir`` listed in an annotation file of ``<file> <label>`` lines."""

    def __init__(self, config):
        super().__init__(config)
        with open(self.config.annotation_file) as f:
            self._items = [(name, int(label)) for name, label in (line.split() for line in f if line.strip())]
        if self.config.subset:
            self._items = self._items[:self.config.subset]

    def __len__(self):
        return len(self._items)

    def __getitem__(self, index):
        """``(image, label)``: raw pixels, float32 CHW (the IR normalises them itself)."""
        name, label = self._items[index]
        path = os.path.join(self.config.data_source, name)
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE if self.config.channels == 1 else cv2.IMREAD_COLOR)  # or BGR
        if image is None:
            raise FileNotFoundError(path)
        image = cv2.resize(image, (self.config.width, self.config.height))
        image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # HW or HWC -> CHW
        return image.astype(np.float32), label


class Accuracy(Metric):
    """Top-1 accuracy."""

    def __init__(self):
        super().__init__()
        self._name = TOP1

    @property
    def value(self):
        """Matches of the last batch, one per image (AccuracyAwareQuantization ranks layers by them)."""
        return {self._name: self._matches[-1]}

    @property
    def avg_value(self):
        return {self._name: float(np.mean(np.concatenate(self._matches))) if self._matches else 0.0}

    def update(self, output, target):
        predicted = np.argmax(output[0], axis=1)  # output: one array per model output, batch first
        self._matches.append([float(p == t) for p, t in zip(predicted, target)])

    def reset(self):
        self._matches = []

    def get_attributes(self):
        return {self._name: {'direction': 'higher-better', 'type': 'accuracy'}}


def main():
    parser = argparse.ArgumentParser(description='Post-training quantization of an image classifier')
    parser.add_argument('-m', '--model', required=True, help='model .xml')
    parser.add_argument('-w', '--weights', help='model .bin (default: beside the .xml)')
    parser.add_argument('-d', '--data-source', required=True, help='images folder')
    parser.add_argument('-a', '--annotation-file', required=True, help='"<file> <label>" per line')
    parser.add_argument('--max-drop', type=float, default=0.004, help='largest accuracy drop accepted')
    parser.add_argument('--subset', type=int, default=0, help='use only the first N images (0: all)')
    parser.add_argument('-o', '--output-dir', default='results/classification', help='where the INT8 IR goes')
    args = parser.parse_args()

    model_config = {'model_name': os.path.splitext(os.path.basename(args.model))[0],
                    'model': args.model, 'weights': args.weights}  # weights: default beside the .xml
    model = load_model(model_config)
    # the input, NCHW: 1 channel (grayscale) or 3 (BGR), and the image size
    shape = ov.Core().read_model(args.model, args.weights).input(0).get_partial_shape()
    data_loader = ClassificationDataLoader({'data_source': args.data_source, 'annotation_file': args.annotation_file,
                                            'subset': args.subset, 'channels': shape[1].get_length(),
                                            'height': shape[2].get_length(), 'width': shape[3].get_length()})
    metric = Accuracy()
    engine = IEEngine(config={'device': 'CPU'}, data_loader=data_loader, metric=metric)

    params = {'target_device': 'ANY', 'preset': 'performance', 'stat_subset_size': 300}
    pipeline = create_pipeline([{'name': 'DefaultQuantization', 'params': params}], engine)
    fp32 = pipeline.evaluate(model)
    int8_model = pipeline.run(model)  # quantizes `model` in place and returns it
    int8 = pipeline.evaluate(int8_model)
    drop = fp32[TOP1] - int8[TOP1]
    print(f'DefaultQuantization: accuracy drop {drop:.4f} (limit {args.max_drop})')

    if drop > args.max_drop:
        params = dict(params, maximal_drop=args.max_drop)
        pipeline = create_pipeline([{'name': 'AccuracyAwareQuantization', 'params': params}], engine)
        int8_model = pipeline.run(load_model(model_config))  # starts again from the FP32 model
        int8 = pipeline.evaluate(int8_model)
        print(f'AccuracyAwareQuantization: accuracy drop {fp32[TOP1] - int8[TOP1]:.4f}')

    compress_model_weights(int8_model)
    paths = save_model(int8_model, save_path=args.output_dir, model_name=model_config['model_name'])
    print(f'INT8 model: {paths[0]["model"]}')

    for title, metrics in (('FP32', fp32), ('INT8', int8)):
        print(title)
        for name, value in metrics.items():
            print(f'{name: <27s}: {value}')


if __name__ == '__main__':
    main()
