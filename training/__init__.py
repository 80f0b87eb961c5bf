"""Training of the forecasting models (Keras 3, TensorFlow backend).

Only ever imported in the spawned training process (``python -m training.run``):
the service never imports this package, it runs the exported weights through
:mod:`core.forecast` in numpy.
"""

import os

# Before anything imports keras: pick the backend and silence TensorFlow's C++
# start-up chatter, which would otherwise flood the trainer's stderr.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Training runs on the CPU by design; without this TensorFlow logs a CUDA error.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
