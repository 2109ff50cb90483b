"""The classifier head: global average pooling and the fully connected layer."""
import numpy as np
from numba import njit, prange

from ._common import CACHE, FASTMATH, ZERO

# Classes per dense task: 1000 classes give 4 tasks per image, enough for 2-4 threads.
DENSE_CHUNK = 256


def pack_dense_weights(weight):
    """(K, C) as PyTorch's Linear stores it -> (C, K): a row of K outputs per input feature."""
    return np.ascontiguousarray(weight.T, dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def global_avgpool_nhwc(x, out):
    """out[n, c] = mean over (h, w) of x[n, h, w, c]. x (N, H, W, C); out (N, C)."""
    n_batch, height, width, channels = x.shape
    scale = np.float32(1.0 / (height * width))
    for n in prange(n_batch):
        acc = out[n]  # (C,)
        for c in range(channels):
            acc[c] = ZERO
        for h in range(height):
            for w in range(width):
                pixel = x[n, h, w]
                for c in range(channels):
                    acc[c] += pixel[c]
        for c in range(channels):
            acc[c] *= scale


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def dense_bias(x, weight, bias, out):
    """out = x @ weight + bias. x (N, C); weight (C, K) packed; bias (K,); out (N, K)."""
    n_batch, features = x.shape
    classes = out.shape[1]
    chunks = (classes + DENSE_CHUNK - 1) // DENSE_CHUNK
    for task in prange(n_batch * chunks):
        n = task // chunks
        start = (task - n * chunks) * DENSE_CHUNK
        stop = min(start + DENSE_CHUNK, classes)
        acc = out[n, start:stop]  # (chunk,)
        for j in range(stop - start):
            acc[j] = bias[start + j]
        for c in range(features):
            value = x[n, c]
            row = weight[c, start:stop]
            for j in range(stop - start):
                acc[j] += value * row[j]
