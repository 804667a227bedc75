"""TensorFlow: logical CPUs and MirroredStrategy, op determinism, memory growth, XLA on request."""

from __future__ import annotations

from benchmark.engines.base import Engine


class TensorFlowEngine(Engine):
    name = "tensorflow"

    def setup(self, cfg):
        import keras
        import tensorflow as tf

        if cfg.logical_cpus > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cfg.logical_cpus)
        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            self.deterministic()
        gpus = tf.config.list_physical_devices("GPU")
        for g in gpus:
            try:
                tf.config.experimental.set_memory_growth(g, True)
            except (ValueError, RuntimeError):
                pass
        precision = cfg.precision
        if precision == "auto":
            precision = "mixed_float16" if gpus else "float32"
        keras.mixed_precision.set_global_policy(precision)
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        if cfg.logical_cpus > 1:
            return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
        return None

    def accelerator(self) -> bool:
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))

    def deterministic(self) -> None:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    def batches(self, images, rows, targets, batch_size: int, shuffle: bool = False, seed: int = 0,
                deterministic: bool = False, drop_remainder: bool = False, steps: int | None = None,
                first_epoch: int = 0):
        """tf.data over the cache (benchmark.input.pipeline); with `steps`, repeated so that every epoch has them.
        (tf.data's shuffle keeps its own state across epochs: `first_epoch` is not needed.)"""
        from benchmark.input.pipeline import make_dataset

        ds = make_dataset(images, rows, targets, batch_size, shuffle=shuffle, seed=seed, deterministic=deterministic,
                          drop_remainder=drop_remainder)
        return ds.repeat() if steps else ds

    def ten_crop(self, batch, mirror: bool = False):
        from benchmark.input.pipeline import ten_crop

        return ten_crop(batch, mirror)

    def gradient(self, score, feats):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(feats)
            value = score(feats)
        return tape.gradient(value, feats)

    def versions(self) -> dict:
        import tensorflow as tf

        info = tf.sysconfig.get_build_info()
        names = []
        for g in tf.config.list_physical_devices("GPU"):
            try:
                names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
            except (ValueError, RuntimeError):
                names.append(g.name)
        return {"tensorflow": tf.__version__, "cuda": info.get("cuda_version"), "cudnn": info.get("cudnn_version"),
                "devices": [d.name for d in tf.config.list_logical_devices()], "gpus": names}
