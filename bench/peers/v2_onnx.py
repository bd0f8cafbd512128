"""The Open Inference Protocol (v2) JSON tensors and one ONNX Runtime session
per model, shared by the Flask and Ray Serve peers of `switchyard-bench peers`.

Only what the benchmark sends is supported: JSON tensors (no binary
extension), every input of the model given by name. A request that does not
fit gets a 400 with a message, as a v2 server answers it.
"""

import json
import os

import numpy as np
import onnxruntime as ort

# ONNX element types and their v2 names.
_V2_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}
_NUMPY_TYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


class BadRequest(Exception):
    """The request is not a v2 inference request this model can run."""


def _dims(shape):
    # Symbolic or unknown dimensions are the batch: -1 in v2 metadata.
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


class OnnxModel:
    """One model: its session (one intra-op thread, as Switchyard's workers
    have) and its v2 metadata."""

    def __init__(self, name, path, intra_op_threads=1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.name = name
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [
            {"name": i.name, "datatype": _V2_TYPES.get(i.type, i.type), "shape": _dims(i.shape)}
            for i in self.session.get_inputs()
        ]
        self.outputs = [
            {"name": o.name, "datatype": _V2_TYPES.get(o.type, o.type), "shape": _dims(o.shape)}
            for o in self.session.get_outputs()
        ]

    def metadata(self):
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": self.inputs,
            "outputs": self.outputs,
        }

    def infer(self, body):
        """Runs the decoded JSON body of an infer request; the response as a dict."""
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise BadRequest("the body must be a JSON object with an `inputs` list")
        feeds = {}
        for tensor in body["inputs"]:
            try:
                dtype = _NUMPY_TYPES[tensor["datatype"]]
                array = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
                feeds[tensor["name"]] = array
            except (KeyError, TypeError, ValueError) as error:
                raise BadRequest(f"bad input tensor: {error}") from error
        missing = [i["name"] for i in self.inputs if i["name"] not in feeds]
        if missing:
            raise BadRequest(f"missing inputs: {', '.join(missing)}")
        results = self.session.run(None, feeds)
        outputs = []
        for spec, value in zip(self.outputs, results):
            outputs.append(
                {
                    "name": spec["name"],
                    "datatype": spec["datatype"],
                    "shape": list(value.shape),
                    "data": value.ravel().tolist(),
                }
            )
        response = {"model_name": self.name, "model_version": "1", "outputs": outputs}
        if "id" in body:
            response["id"] = body["id"]
        return response


def load_models():
    """The models named in PEERS_MODELS (`name=path,name=path`)."""
    spec = os.environ.get("PEERS_MODELS", "")
    models = {}
    for item in filter(None, spec.split(",")):
        name, _, path = item.partition("=")
        models[name] = OnnxModel(name, path)
    if not models:
        raise SystemExit("PEERS_MODELS names no model (name=path,name=path)")
    return models


def error_body(message):
    return json.dumps({"error": message})
