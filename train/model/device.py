"""Where training runs: GPU detection, mixed precision, distribution strategy.

Called once, before the model is built: mixed precision is a global Keras policy and the
CPU can only be split into logical devices before TensorFlow initialises it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import keras
import tensorflow as tf

from train.config import TrainConfig

MIN_MIXED_PRECISION_CAPABILITY = (7, 0)  # Volta and later have float16 tensor cores
LOGICAL_CPUS_FOR_MIRRORED = 2


@dataclass
class DeviceSetup:
    strategy: tf.distribute.Strategy
    description: str  # e.g. "1 GPU (NVIDIA H100), mixed precision"
    mixed_precision: bool

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def set_up_devices(config: TrainConfig) -> DeviceSetup:
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)  # share the GPU with other runs
    strategy = _strategy(config.strategy, len(gpus))
    mixed = _use_mixed_precision(config.mixed_precision, gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return DeviceSetup(strategy, _describe(gpus, strategy, mixed), mixed)


@functools.cache  # one per process: a sweep's children share it, and with it their kept model
def _strategy(choice: str, gpu_count: int) -> tf.distribute.Strategy:
    if choice == "none" or (choice == "auto" and gpu_count < 2):
        return tf.distribute.get_strategy()  # the default: one device
    if gpu_count:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS_FOR_MIRRORED)
    names = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(names, cross_device_ops=tf.distribute.ReductionToOneDevice())


def _use_mixed_precision(choice: str, gpus) -> bool:
    if choice != "auto":
        return choice == "on"
    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if tuple(capability) >= MIN_MIXED_PRECISION_CAPABILITY:
            return True
    return False


def _describe(gpus, strategy, mixed: bool) -> str:
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        where = f"{len(gpus)} GPU ({name})"
    else:
        where = "CPU"
    parts = [where, f"{strategy.num_replicas_in_sync} replicas" if strategy.num_replicas_in_sync > 1 else "", "mixed precision" if mixed else "float32"]
    return ", ".join(part for part in parts if part)
