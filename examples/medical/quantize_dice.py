"""Quantize the lesion-segmentation model with the Python API and measure the Dice coefficient.

    python examples/medical/quantize_dice.py -m MODEL_DIR/lesion_seg.xml -d DATA_DIR [-o results/medical]

Calibration (DefaultQuantization, 300-sample default capped at the calibration cases) on the
first ``--calibration`` cases, the Dice metric on the others. If the INT8 Dice drops by more than
``--max-drop``, AccuracyAwareQuantization starts again from the FP32 model and keeps the most
harmful layers in floating point. Written as the original POT samples were (``DataLoader``,
``Metric``, ``IEEngine``, ``create_pipeline``); only the import line is ``pot_cli.api``.

Dice (Dice 1945; the standard overlap score of medical segmentation): per case
``2 |P & G| / (|P| + |G|)`` with ``P`` the pixels whose lesion probability is > 0.5 and ``G`` the
lesion mask (1.0 when both are empty); the metric is the mean over cases. Higher is better.
"""
import argparse
import os

import numpy as np

from pot_cli.api import DataLoader, IEEngine, Metric, compress_model_weights, create_pipeline, load_model, save_model

DICE = 'dice'


class PhantomLoader(DataLoader):
    """``(slice, mask)`` of the listed cases: float32 (1, 128, 128) intensity and uint8 (128, 128) mask."""

    def __init__(self, config):
        super().__init__(config)
        self._cases = self.config.cases

    def __len__(self):
        return len(self._cases)

    def __getitem__(self, index):
        case = self._cases[index]
        image = np.load(os.path.join(self.config.data_dir, 'slices', case + '.npy'))
        mask = np.load(os.path.join(self.config.data_dir, 'masks', case + '.npy'))
        return image[None].astype(np.float32), mask


class Dice(Metric):
    """Mean Dice over cases; per case for AccuracyAwareQuantization's ranking."""

    def __init__(self):
        super().__init__()
        self._scores = []

    @staticmethod
    def dice(probability, mask):
        predicted, truth = probability > 0.5, mask > 0
        total = predicted.sum() + truth.sum()
        return 1.0 if total == 0 else 2.0 * float((predicted & truth).sum()) / float(total)

    @property
    def value(self):
        return {DICE: self._scores[-1:]}

    @property
    def avg_value(self):
        return {DICE: float(np.mean(self._scores))}

    def update(self, output, target):
        """``output``: one array per model output, batch first ((N, 1, 128, 128)); ``target``: N masks."""
        for probability, mask in zip(output[0], target):
            self._scores.append(self.dice(probability[0], mask))

    def reset(self):
        self._scores = []

    def get_attributes(self):
        return {DICE: {'direction': 'higher-better', 'type': 'dice'}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-m', '--model', required=True)
    parser.add_argument('-d', '--data-dir', required=True)
    parser.add_argument('-o', '--output-dir', default='results/medical')
    parser.add_argument('--calibration', type=int, default=32, help='first N cases calibrate (default 32)')
    parser.add_argument('--max-drop', type=float, default=0.01, help='absolute Dice drop accepted (default 0.01)')
    args = parser.parse_args(argv)
    cases = open(os.path.join(args.data_dir, 'cases.txt')).read().split()
    calibration = PhantomLoader({'data_dir': args.data_dir, 'cases': cases[:args.calibration]})
    validation = PhantomLoader({'data_dir': args.data_dir, 'cases': cases[args.calibration:]})

    model_config = {'model_name': 'lesion_seg', 'model': args.model,
                    'weights': os.path.splitext(args.model)[0] + '.bin'}
    params = {'target_device': 'ANY', 'preset': 'performance', 'stat_subset_size': 300}
    # the original samples calibrated on the engine's data loader: calibrate, then measure on the other cases
    quantized = create_pipeline([{'name': 'DefaultQuantization', 'params': params}],
                                IEEngine({'device': 'CPU'}, calibration)).run(load_model(model_config))
    measure = create_pipeline([], IEEngine({'device': 'CPU'}, validation, Dice()))
    fp32 = measure.evaluate(load_model(model_config))[DICE]
    int8 = measure.evaluate(quantized)[DICE]
    print(f'DefaultQuantization: Dice drop {fp32 - int8:.4f} (limit {args.max_drop})')
    if fp32 - int8 > args.max_drop:
        aa = dict(params, maximal_drop=args.max_drop)
        quantized = create_pipeline([{'name': 'AccuracyAwareQuantization', 'params': aa}],
                                    IEEngine({'device': 'CPU'}, validation, Dice())).run(load_model(model_config))
        int8 = measure.evaluate(quantized)[DICE]
    compress_model_weights(quantized)
    paths = save_model(quantized, args.output_dir, model_name='lesion_seg')
    print('INT8 model:', paths[0]['model'])
    print(f'FP32 dice: {fp32:.4f}')
    print(f'INT8 dice: {int8:.4f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
