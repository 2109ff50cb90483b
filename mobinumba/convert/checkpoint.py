"""Read a PyTorch checkpoint file into a flat {key: float32 ndarray} state dict.

`.safetensors` is read with the safetensors package (no torch needed). Anything else is
treated as a torch.save file and read with torch.load(weights_only=True), which refuses
pickles that would run code. Wrappers such as {"state_dict": ...} and the DataParallel
"module." prefix are removed.
"""
import hashlib
import json
import os
import re
import zipfile
import zlib
from collections import Counter

import numpy as np

from ..errors import CheckpointError, check_regular_file
from ..weights import MAX_DATASET_ELEMENTS

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
IGNORED_SUFFIX = ".num_batches_tracked"


def sha256_of(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path):
    """{key: float32 ndarray} of a checkpoint, with wrappers and prefixes removed.

    Raises CheckpointError naming the file for a missing, unreadable or non-checkpoint file,
    and naming the key for a value that is not a tensor.
    """
    path = os.fspath(path)
    check_regular_file(path, CheckpointError, "a checkpoint")
    if path.endswith(".safetensors"):
        raw = _read_safetensors(path)
    else:
        raw = _read_torch(path)
    return _clean(raw, path)


def _read_safetensors(path):
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package "
                              f"(pip install 'mobinumba[convert]')") from None
    try:
        handle = safe_open(path, framework="numpy")  # checks the header and data offsets
    except Exception as error:  # safetensors raises its own SafetensorError and others
        raise CheckpointError(f"{path}: not a readable safetensors file "
                              f"({_first_line(error)})") from None
    tensors = {}
    with handle:
        for key in handle.keys():
            try:
                if handle.get_slice(key).get_dtype() == "BF16":
                    tensors[key] = _read_bfloat16(path, key)
                else:
                    tensors[key] = handle.get_tensor(key)
            except Exception as error:
                raise CheckpointError(f"{path}: {key}: unreadable tensor "
                                      f"({_first_line(error)})") from None
    return tensors


def _read_bfloat16(path, key):
    """A bfloat16 tensor of a safetensors file (numpy has no bfloat16, so safetensors.numpy
    cannot give it) as float32: its raw 16-bit values are the top half of a float32's bits.
    The header was already validated by safe_open (offsets inside the file, sizes matching
    the shapes)."""
    with open(path, "rb") as stream:
        header_size = int.from_bytes(stream.read(8), "little")
        entry = json.loads(stream.read(header_size))[key]
        begin, end = entry["data_offsets"]
        stream.seek(8 + header_size + begin)
        raw = np.frombuffer(stream.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading torch.save checkpoints needs torch "
                              f"(pip install 'mobinumba[convert]'); .safetensors files "
                              f"do not") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
            IndexError, TypeError, UnicodeDecodeError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"({_torch_reason(error)})") from None
    except Exception as error:  # pickle.UnpicklingError, weights_only refusals, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"({type(error).__name__}: {_torch_reason(error)})") from None
    if zipfile.is_zipfile(path):
        _check_storages_match_records(loaded, path)
    return loaded


def _check_storages_match_records(loaded, path):
    """Refuse a torch.save zip whose loaded storages are not exactly its data records.

    torch.load reads records through its own zip reader without checking their CRC-32, and
    trusts the central directory: one flipped bit there (found by fuzzing) made it fill a
    64 KiB storage with uninitialised memory, so the converted model computed garbage that
    changed from run to run. A file torch.save wrote has one record per storage holding
    exactly the storage's bytes, so the (size, CRC-32) pairs of the storages torch.load
    built must be those the zip directory lists. Costs one CRC pass over the weights.
    """
    import torch

    storages = {}  # data_ptr -> ((nbytes, crc32), key of a tensor using it), each once
    pending = [("", loaded)]
    while pending:
        key, item = pending.pop()
        if isinstance(item, dict):
            pending.extend((f"{key}.{name}".lstrip("."), value) for name, value in item.items())
        elif isinstance(item, (list, tuple)):
            pending.extend((f"{key}.{index}".lstrip("."), value)
                           for index, value in enumerate(item))
        elif isinstance(item, torch.Tensor):
            if (item.device.type != "cpu" or item.layout != torch.strided or item.is_quantized
                    or item.is_nested):
                return  # not a plain tensor: _clean refuses it, naming its key
            storage = item.untyped_storage()
            if storage.nbytes() and storage.data_ptr() not in storages:
                raw = torch.empty(0, dtype=torch.uint8).set_(storage).numpy()
                storages[storage.data_ptr()] = ((storage.nbytes(), zlib.crc32(raw)), key)
    try:
        with zipfile.ZipFile(path) as archive:
            records = {info.filename: (info.file_size, info.CRC)
                       for info in archive.infolist()
                       if _DATA_RECORD.fullmatch(info.filename) and info.file_size}
    except Exception as error:  # BadZipFile, NotImplementedError ("zip file version"), ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (its zip directory: "
                              f"{_first_line(error)})") from None
    loaded_data = Counter(pair for pair, _ in storages.values())
    in_file = Counter(records.values())
    if loaded_data != in_file:
        unread, unused = loaded_data - in_file, in_file - loaded_data
        culprit = next((key for pair, key in storages.values() if pair in unread), None)
        if culprit is not None:
            what = f"the data torch read for {culprit!r} matches no record's size and CRC-32"
        else:  # e.g. a damaged storage key: two tensors read one record, another is unused
            record = next(name for name, pair in records.items() if pair in unused)
            what = f"no tensor holds the data of record {record!r}"
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint: {what}")


# The zip members holding storages: "<archive name>/data/<storage key>".
_DATA_RECORD = re.compile(r"[^/]+/data/[0-9]+")


# Sentences of torch.load's weights-only refusal that are advice or preamble, not the reason:
# above all "Re-running `torch.load` with `weights_only` set to `False` will likely succeed",
# which would run whatever code the pickle holds. mobinumba never passes that advice on.
_TORCH_ADVICE = re.compile(r"weights.only\W*(set to\W*)?False|re-?running|trusted source|"
                           r"file an issue|documentation of torch\.load|we changed the default|"
                           r"weights only load failed", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def _torch_reason(error):
    """The first line of a torch.load error, or for a weights-only refusal what was refused
    without torch's advice ("refused by torch's safe loader: Unsupported operand 149")."""
    text = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
    sentences = [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]
    kept = [part for part in sentences if not _TORCH_ADVICE.search(part)]
    if len(kept) == len(sentences):
        return _first_line(error)
    return ("refused by torch's safe loader" + (": " + " ".join(kept) if kept else ""))[:200]


def _clean(raw, path):
    """Unwrap, strip the 'module.' prefix, convert tensors to float32 numpy arrays."""
    if isinstance(raw, dict):
        for key in WRAPPER_KEYS:
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw:
        found = "an empty dict" if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path}: does not hold a state dict (found {found})")
    if all(isinstance(key, str) and key.startswith("module.") for key in raw):
        raw = {key[len("module."):]: value for key, value in raw.items()}
    state = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: state dict key {key!r} is not a string")
        if key.endswith(IGNORED_SUFFIX):
            continue
        state[key] = _to_float32(value, f"{path}: key {key!r}")
    return state


def _to_float32(value, what):
    """A float32 ndarray copy of a numpy array or a dense CPU torch tensor.

    Everything else is refused before any conversion: non-tensors, sparse, quantized,
    nested and meta tensors, non-float dtypes, and tensors with more than
    MAX_DATASET_ELEMENTS elements (a stride-0 view of one stored value can declare any
    size, so a small file could otherwise make this allocate without bound).
    """
    if isinstance(value, np.ndarray):
        array = value
    elif type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        array = _torch_to_numpy(value, what)
    else:
        raise CheckpointError(f"{what}: value is {type(value).__name__}, expected a tensor")
    if array.dtype.kind != "f":
        raise CheckpointError(f"{what}: tensor has dtype {array.dtype}, expected floating "
                              f"point")
    if array.size > MAX_DATASET_ELEMENTS:
        raise CheckpointError(f"{what}: tensor of shape {array.shape} has more than "
                              f"{MAX_DATASET_ELEMENTS} elements")
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, refused later
        return array.astype(np.float32)


def _torch_to_numpy(tensor, what):
    """The values of a dense CPU float tensor as a float32 ndarray, or CheckpointError."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"{what}: value is {type(tensor).__name__}, expected a tensor")
    if tensor.is_nested or tensor.is_quantized or tensor.layout != torch.strided:
        kind = ("nested" if tensor.is_nested else "quantized" if tensor.is_quantized
                else str(tensor.layout).replace("torch.", ""))
        raise CheckpointError(f"{what}: is a {kind} tensor, expected a dense float tensor")
    if tensor.device.type != "cpu":
        raise CheckpointError(f"{what}: tensor is on device {tensor.device.type!r}, "
                              f"expected cpu")
    dtype = str(tensor.dtype).replace("torch.", "")
    if not tensor.dtype.is_floating_point:
        raise CheckpointError(f"{what}: tensor has dtype {dtype}, expected floating point")
    if tensor.numel() > MAX_DATASET_ELEMENTS:
        raise CheckpointError(f"{what}: tensor of shape {tuple(tensor.shape)} has more than "
                              f"{MAX_DATASET_ELEMENTS} elements")
    # bfloat16 and float8 have no numpy dtype: widen every float tensor to float32 in torch.
    return tensor.detach().float().numpy()


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
