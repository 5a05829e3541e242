#!/usr/bin/python3
"""Writes Fashion-MNIST as safetensors files for tern's `data.source: tensors`.

    /usr/bin/python3 examples/fmnist_to_safetensors.py          # data/fmnist/{train,test}.safetensors
    /usr/bin/python3 examples/fmnist_to_safetensors.py --src /usr/share/datasets/fashion-mnist \\
        --out /tmp/fmnist

Reads the IDX files of Debian's dataset-fashion-mnist package (train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-*; gzip-compressed `.gz` or plain, whichever is there) and writes
two files, each holding
    "inputs"   float32 [N, 1, 28, 28]: (x / 255 - 0.2860) / 0.3530, as tern's own loader
                                       normalises them (--no-normalize: x / 255)
    "targets"  int64   [N]:            the class, 0..9
N is 60000 for train.safetensors and 10000 for test.safetensors.

The safetensors format is written by hand (there is no safetensors package in Debian 12): an
8-byte little-endian header length, a JSON header mapping each tensor name to its dtype, shape
and [begin, end) byte offsets into the data that follows, padded with spaces to a multiple of
8 bytes, then the raw little-endian data. Every file is read back and compared before the
script reports success. The normalisation uses torch's float32 kernels, the same as tern's
C++ loader, so the inputs are bit-for-bit what `data.source: fashion_mnist` trains on.
"""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel mean and deviation (tern's loader)
SPLITS = (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


class DataError(Exception):
    pass


def read_idx(src_dir, name, magic):
    """The bytes of an IDX file, from `name.gz` or `name` in src_dir, checked for `magic`."""
    for path, opener in ((os.path.join(src_dir, name + ".gz"), gzip.open),
                         (os.path.join(src_dir, name), open)):
        if os.path.exists(path):
            try:
                with opener(path, "rb") as f:
                    data = f.read()
            except (OSError, EOFError) as e:  # gzip raises both for damaged files
                raise DataError("%s: cannot read: %s" % (path, e))
            if len(data) < 8 or struct.unpack(">I", data[:4])[0] != magic:
                raise DataError("%s: not an IDX file (magic number %d expected)" % (path, magic))
            return path, data
    raise DataError("%s: neither %s.gz nor %s is there (install dataset-fashion-mnist)"
                    % (src_dir, name, name))


def load_split(src_dir, images_name, labels_name, normalize):
    img_path, img = read_idx(src_dir, images_name, 2051)
    lab_path, lab = read_idx(src_dir, labels_name, 2049)
    if len(img) < 16:
        raise DataError("%s: truncated header" % img_path)
    n, rows, cols = struct.unpack(">III", img[4:16])
    (n_labels,) = struct.unpack(">I", lab[4:8])
    if (rows, cols) != (28, 28):
        raise DataError("%s: %dx%d images, expected 28x28" % (img_path, rows, cols))
    if n != n_labels:
        raise DataError("%s has %d images but %s has %d labels" % (img_path, n, lab_path, n_labels))
    if len(img) != 16 + n * rows * cols:
        raise DataError("%s: %d bytes, expected %d" % (img_path, len(img), 16 + n * rows * cols))
    if len(lab) != 8 + n:
        raise DataError("%s: %d bytes, expected %d" % (lab_path, len(lab), 8 + n))
    pixels = torch.from_numpy(np.frombuffer(img, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols).copy())
    x = pixels.to(torch.float32).div_(255.0)
    if normalize:
        x.sub_(MEAN).div_(STD)
    y = torch.from_numpy(np.frombuffer(lab, dtype=np.uint8, offset=8).astype(np.int64))
    if n and int(y.max()) > 9:
        raise DataError("%s: label %d out of range 0..9" % (lab_path, int(y.max())))
    return x, y


DTYPES = {torch.float32: ("F32", "<f4"), torch.int64: ("I64", "<i8")}


def write_safetensors(path, tensors, metadata):
    """tensors: [(name, contiguous CPU tensor)], written in that order; atomic (tmp + rename)."""
    header, arrays, offset = {}, [], 0
    for name, t in tensors:
        code, np_dtype = DTYPES[t.dtype]
        arr = np.ascontiguousarray(t.numpy().astype(np_dtype, copy=False))
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + arr.nbytes]}
        arrays.append(arr)
        offset += arr.nbytes
    header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(memoryview(arr).cast("B"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def verify_safetensors(path, tensors):
    """Reads `path` back as a reader would and compares it with what was meant to be written."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base, covered = 8 + n, 0
    for name, t in tensors:
        code, np_dtype = DTYPES[t.dtype]
        entry = header[name]
        begin, end = entry["data_offsets"]
        if entry["dtype"] != code or entry["shape"] != list(t.shape):
            raise DataError("%s: tensor %s reads back as %s %s" % (path, name, entry["dtype"], entry["shape"]))
        back = np.frombuffer(data[base + begin:base + end], dtype=np_dtype).reshape(t.shape)
        if not np.array_equal(back, t.numpy()):
            raise DataError("%s: tensor %s reads back with different values" % (path, name))
        covered += end - begin
    if base + covered != len(data):
        raise DataError("%s: %d bytes of data, the header covers %d" % (path, len(data) - base, covered))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", default="/usr/share/datasets/fashion-mnist", help="directory of the IDX files")
    p.add_argument("--out", default=os.path.join("data", "fmnist"), help="directory to write to")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="write x / 255 (tern's data.normalize: false) instead of the normalised pixels")
    a = p.parse_args(argv)
    try:
        os.makedirs(a.out, exist_ok=True)
        for split, images_name, labels_name in SPLITS:
            x, y = load_split(a.src, images_name, labels_name, a.normalize)
            path = os.path.join(a.out, split + ".safetensors")
            tensors = [("inputs", x), ("targets", y)]
            metadata = {"source": "Fashion-MNIST (%s, %s)" % (a.src, split),
                        "inputs": "(x/255 - %.4f)/%.4f" % (MEAN, STD) if a.normalize else "x/255"}
            write_safetensors(path, tensors, metadata)
            verify_safetensors(path, tensors)
            print("fmnist_to_safetensors: %s: inputs float32 %s, targets int64 [%d] (%d bytes)"
                  % (path, list(x.shape), y.numel(), os.path.getsize(path)))
    except DataError as e:
        print("fmnist_to_safetensors: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("fmnist_to_safetensors: %s: %s" % (e.filename or a.out, e.strerror), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
