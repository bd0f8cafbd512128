#!/usr/bin/env python3
"""Checks the generated model repository, independently of make_models.py.

    python models/gen/test_models.py            # uses models/repository
    SWITCHYARD_MODEL_REPOSITORY=/path python models/gen/test_models.py

Nothing here imports the generator: the expected numbers are restated, so a
bug in the generator cannot vouch for itself.  A missing file is a failure,
never a skip.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import unittest
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

MODELS_DIR = Path(__file__).resolve().parent.parent
REPOSITORY = Path(os.environ.get("SWITCHYARD_MODEL_REPOSITORY", MODELS_DIR / "repository"))
CHECKSUMS = MODELS_DIR / "checksums.sha256"

EXPECTED_FILES = {
    "digits/1/model.onnx",
    "digits/testdata/heldout.json",
    "fashion_cnn/1/model.onnx",
    "xception/1/model.onnx",
}


def load(name: str) -> onnx.ModelProto:
    path = REPOSITORY / name / "1" / "model.onnx"
    if not path.is_file():
        raise AssertionError(f"{path} missing; run models/gen/make_models.py --out {REPOSITORY}")
    return onnx.load(path)


def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(REPOSITORY / name / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])


def signature(values) -> list[tuple]:
    """(name, element type, dims) of graph inputs/outputs; dims are ints or dim_param strings."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.HasField("dim_param") else
                d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        out.append((v.name, t.elem_type, dims))
    return out


def param_count(model: onnx.ModelProto) -> int:
    return sum(math.prod(t.dims) for t in model.graph.initializer)


class RandomWeightModels(unittest.TestCase):
    """fashion_cnn and xception: architecture-defined numbers and I/O contracts."""

    def check_random_input(self, name: str, input_shape: tuple, out_shape: tuple) -> np.ndarray:
        x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
        (out,) = session(name).run(None, {"input": x})
        self.assertEqual(out.shape, out_shape)
        self.assertTrue(np.all(np.isfinite(out)), f"{name}: non-finite output")
        return out

    def test_fashion_cnn_param_count(self):
        self.assertEqual(param_count(load("fashion_cnn")), 421_642)

    def test_fashion_cnn_io(self):
        g = load("fashion_cnn").graph
        self.assertEqual(signature(g.input), [("input", TensorProto.FLOAT, ["N", 1, 28, 28])])
        self.assertEqual(signature(g.output), [("logits", TensorProto.FLOAT, ["N", 10])])
        self.check_random_input("fashion_cnn", (3, 1, 28, 28), (3, 10))

    def test_xception_param_count(self):
        self.assertEqual(param_count(load("xception")), 22_910_480)

    def test_xception_io(self):
        g = load("xception").graph
        self.assertEqual(signature(g.input), [("input", TensorProto.FLOAT, ["N", 3, 299, 299])])
        self.assertEqual(signature(g.output), [("probabilities", TensorProto.FLOAT, ["N", 1000])])
        probs = self.check_random_input("xception", (1, 3, 299, 299), (1, 1000))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


class Digits(unittest.TestCase):
    """The trained classifier: real accuracy on the held-out quarter."""

    @classmethod
    def setUpClass(cls):
        path = REPOSITORY / "digits" / "testdata" / "heldout.json"
        if not path.is_file():
            raise AssertionError(f"{path} missing")
        data = json.loads(path.read_text())
        cls.x = np.asarray(data["inputs"], dtype=np.float32)
        cls.y = np.asarray(data["labels"], dtype=np.int64)

    def test_heldout_file(self):
        self.assertEqual(self.x.shape, (450, 64))  # a quarter of 1,797 digits
        self.assertEqual(self.y.shape, (450,))
        self.assertTrue(0 <= self.x.min() and self.x.max() <= 16, "expects raw 0..16 pixels")
        self.assertEqual(set(self.y.tolist()), set(range(10)))

    def test_io(self):
        g = load("digits").graph
        self.assertEqual([(n, t) for n, t, _ in signature(g.input)], [("input", TensorProto.FLOAT)])
        self.assertEqual(signature(g.input)[0][2][1:], [64])
        outputs = {o.name: o.type for o in session("digits").get_outputs()}
        self.assertEqual(outputs, {"label": "tensor(int64)", "probabilities": "tensor(float)"})

    def test_predictions(self):
        labels, probs = session("digits").run(["label", "probabilities"], {"input": self.x})
        self.assertEqual(labels.dtype, np.int64)
        self.assertEqual(labels.shape, (len(self.x),))
        self.assertEqual(probs.dtype, np.float32)
        self.assertEqual(probs.shape, (len(self.x), 10))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(labels, probs.argmax(axis=1))
        accuracy = float(np.mean(labels == self.y))
        self.assertGreaterEqual(accuracy, 0.9, f"held-out accuracy {accuracy:.4f}")


class Checksums(unittest.TestCase):
    def test_every_file_matches(self):
        sums = {}
        for line in CHECKSUMS.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                digest, rel = line.split(maxsplit=1)
                sums[rel.lstrip("*")] = digest
        self.assertEqual(set(sums), EXPECTED_FILES)
        for rel, digest in sorted(sums.items()):
            with self.subTest(file=rel):
                path = REPOSITORY / rel
                self.assertTrue(path.is_file(), f"{path} missing")
                self.assertEqual(hashlib.sha256(path.read_bytes()).hexdigest(), digest,
                                 f"{rel} differs from {CHECKSUMS}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
