"""MetricWriter: scalars and images to TensorBoard event files, without TensorFlow.

  writer = MetricWriter(logdir)   # <logdir>/events.out.tfevents.<time>.<host>.<pid>.<n>.v2
  writer.write(step, {tag: float})       # scalars
  writer.images(step, {tag: uint8 [N, H, W, 3]})   # all N images of each tag, as PNGs

The events are what tf.summary.scalar / tf.summary.image write (TensorBoard's "v2" summaries:
a float32 scalar tensor with the scalars plugin's metadata; a string tensor [width, height,
PNG, ...] with the images plugin's), built from TensorBoard's own protos and record writer, so a
training process never imports TensorFlow (~5 s of start-up). Each write is flushed: a run
killed between writes loses no written summary.
"""

import io
import itertools
import os
import socket
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

_WRITERS = itertools.count()


class MetricWriter:
    """Scalars and images to one new TensorBoard event file in `logdir` (see the module
    docstring)."""

    def __init__(self, logdir: Path):
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = (  # <n>: this process's writer count, as TensorFlow's names have it
            f'events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.'
            f'{next(_WRITERS)}.v2'
        )
        self.path = logdir / name
        self._file = open(self.path, 'wb')
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=now, file_version='brain.Event:2'))

    def write(self, step: int, metrics: dict) -> None:
        """{tag: number} as scalar summaries at `step`."""
        metadata = scalar_metadata.create_summary_metadata(display_name='', description='')
        values = [
            summary_pb2.Summary.Value(
                tag=tag,
                metadata=metadata,
                tensor=tensor_pb2.TensorProto(
                    dtype=types_pb2.DT_FLOAT,
                    tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                    float_val=[float(value)],
                ),
            )
            for tag, value in metrics.items()
        ]
        self._summary(step, values)

    def images(self, step: int, images: dict) -> None:
        """{tag: uint8 [N, H, W, 3]} as image summaries at `step` (all N of each)."""
        metadata = image_metadata.create_summary_metadata(display_name='', description='')
        values = []
        for tag, batch in images.items():
            batch = np.asarray(batch)
            if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
                raise ValueError(
                    f'MetricWriter.images: {tag} must be uint8 [N, H, W, 3], got '
                    f'{batch.dtype} {batch.shape}'
                )
            n, h, w = batch.shape[:3]
            strings = [str(w).encode(), str(h).encode(), *(_png(image) for image in batch)]
            shape = tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n + 2)]
            )
            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=strings
            )
            values.append(summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor))
        self._summary(step, values)

    def close(self) -> None:
        self._records.close()

    def _summary(self, step: int, values: list) -> None:
        event = event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
        )
        self._write(event)

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='PNG')
    return buffer.getvalue()
