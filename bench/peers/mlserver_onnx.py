"""An MLServer runtime that serves an ONNX model with ONNX Runtime, for
`switchyard-bench peers` (MLServer ships no ONNX runtime of its own).

The model file is `parameters.uri` of the model's model-settings.json; the
inputs are decoded and the outputs encoded with MLServer's own NumPy codec.
"""

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        # One intra-op thread per session, as Switchyard's workers have.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri,
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {tensor.name: NumpyCodec.decode_input(tensor) for tensor in payload.inputs}
        results = self._session.run(None, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name=name, payload=value)
                for name, value in zip(self._output_names, results)
            ],
        )
