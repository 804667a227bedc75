# Put first on PYTHONPATH by tests of Keras's JAX and PyTorch backends: any import of TensorFlow in that process,
# or in a process it starts, fails, as on a machine where TensorFlow is not installed.
raise ImportError("TensorFlow is absent in this test (tests/no_tensorflow): a JAX or PyTorch path imported it")
