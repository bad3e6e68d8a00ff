"""DefaultQuantization of the MTCNN cascade (P-Net, R-Net, O-Net) through the API, with a custom
``Engine`` that runs the three stages (``mtcnn_engine.MTCNNEngine``), as the original POT's
face-detection sample.

    python examples/face_detection/face_detection_example.py            # ../shared models and faces

Prints the FP32 and INT8 recall, precision and AP at IoU 0.5, the calibration time, and the
precision each stage's convolutions run in on the CPU (from ``get_runtime_model()``).
"""
import argparse
import os
import sys
import time

import openvino as ov

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mtcnn_engine import FaceDetectionMetric, MTCNNEngine, STAGES, WiderFaceLoader  # noqa: E402

from pot_cli.api import compress_model_weights, create_pipeline, load_model, save_model  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared')


def convolution_precisions(xml):
    """``{execution precision: count}`` of the convolutions of a compiled IR (CPU runtime graph)."""
    compiled = ov.Core().compile_model(xml, 'CPU')
    counts = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info['layerType'].astype(str) == 'Convolution':
            precision = info['runtimePrecision'].astype(str)
            counts[precision] = counts.get(precision, 0) + 1
    return counts


def main():
    parser = argparse.ArgumentParser(description='DefaultQuantization of the MTCNN cascade')
    for stage in STAGES:
        parser.add_argument(f'--{stage}', default=os.path.join(SHARED, 'models', f'mtcnn_{stage}', f'mtcnn_{stage}.xml'),
                            help=f'{stage} .xml (the .bin beside it)')
    parser.add_argument('-d', '--dataset', default=os.path.join(SHARED, 'data', 'faces', 'VOC', 'JPEGImages'))
    parser.add_argument('-a', '--annotation-file',
                        default=os.path.join(SHARED, 'data', 'faces', 'wider_face_annotations.txt'))
    parser.add_argument('--subset', type=int, default=0, help='use only the first N images (0: all)')
    parser.add_argument('-o', '--output-dir', default='results/face_detection', help='where the INT8 IRs go')
    args = parser.parse_args()

    model_config = {'model_name': 'mtcnn',
                    'cascade': [{'name': stage, 'model': getattr(args, stage)} for stage in STAGES]}
    engine_config = {'device': 'CPU'}
    algorithms = [{'name': 'DefaultQuantization',
                   'params': {'target_device': 'ANY', 'preset': 'performance', 'stat_subset_size': 300}}]

    model = load_model(model_config)
    data_loader = WiderFaceLoader(args.dataset, args.annotation_file, args.subset)
    engine = MTCNNEngine(config=engine_config, data_loader=data_loader, metric=FaceDetectionMetric())
    pipeline = create_pipeline(algorithms, engine)

    fp32 = pipeline.evaluate(model)
    started = time.perf_counter()
    compressed = pipeline.run(model)
    calibration_s = time.perf_counter() - started
    compress_model_weights(compressed)
    written = save_model(compressed, args.output_dir, model_name='mtcnn')
    int8 = pipeline.evaluate(compressed)

    print(f'calibration of the cascade: {calibration_s:.1f} s')
    for entry in written:
        print(f'{entry["name"]}: {entry["model"]} convolutions run in {convolution_precisions(entry["model"])}')
    for title, metrics in (('FP32', fp32), ('INT8', int8)):
        for name, value in metrics.items():
            print(f'{title + " " + name: <27s}: {value:.4f}')


if __name__ == '__main__':
    main()
