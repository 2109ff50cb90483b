"""mobinumba: MobileNetV1 inference on the CPU in pure Python, with Numba kernels.

    m = mobinumba.load("model.h5")
    logits = m(x)                   # x: float32 (N, 3, H, W) -> (N, num_classes)
    m.predict(["photo.jpg"], topk=5)
    features = m.features(x)        # (N, 1024 * width): the pooled input of the classifier
    m.embed(["photo.jpg"])          # the same for image files
    mobinumba.set_threads(2)
    for result in mobinumba.predict_files(paths, batch_size=16, topk=5):  # lazily, any number
        print(result.path, result.predictions or result.error)
    for result in mobinumba.embed_files(paths):  # FileEmbedding(path, embedding, error)
        ...
"""
from .errors import CheckpointError, FormatError, InputError, MobinumbaError, NumericError
from .model import Model, Prediction, load
from .stream import FileEmbedding, FileResult, embed_files, predict_files
from .threads import get_threads, set_threads
from . import threads

# Before any kernel runs (none does at import): libgomp reads its environment once.
threads.start_threading_layer()

__version__ = "0.1.0"

__all__ = [
    "load", "Model", "Prediction", "predict_files", "FileResult", "embed_files",
    "FileEmbedding", "set_threads", "get_threads",
    "__version__",
    "MobinumbaError", "FormatError", "CheckpointError", "InputError", "NumericError",
]
