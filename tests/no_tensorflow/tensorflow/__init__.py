# Put first on PYTHONPATH by tests of Keras's JAX and PyTorch backends: any import of TensorFlow in that process,
# or in a process it starts, fails, as on a machine where TensorFlow is not installed, and is recorded (with the
# importing stack) in the file $CXR_TEST_TENSORFLOW_LOG names, so that a test can assert that nothing tried.
import os
import traceback

if os.environ.get("CXR_TEST_TENSORFLOW_LOG"):
    with open(os.environ["CXR_TEST_TENSORFLOW_LOG"], "a") as _log:
        _log.write("".join(traceback.format_stack()) + "\n")
raise ImportError("TensorFlow is absent in this test (tests/no_tensorflow): a JAX or PyTorch path imported it")
