"""Ray Serve with ONNX Runtime behind v2-shaped HTTP routes, for
`switchyard-bench peers`.

    python ray_server.py PORT REPLICAS TEMP_DIR

starts a one-node Ray cluster on loopback (no dashboard, no usage
reporting, its session files under TEMP_DIR), deploys one FastAPI ingress with REPLICAS replicas, each holding
a session per model of PEERS_MODELS, and serves until SIGTERM or SIGINT,
when it shuts Serve and Ray down.
"""

import os
import signal
import sys
import threading

# Before Ray is imported: its single-machine mode, where every component
# finds the others on the loopback address instead of the machine's own IP
# (Ray's default on Linux), and no usage statistics sent anywhere.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import ray  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from ray import serve  # noqa: E402

from v2_onnx import BadRequest, load_models  # noqa: E402

app = FastAPI()


@serve.deployment
@serve.ingress(app)
class V2Onnx:
    def __init__(self):
        self.models = load_models()

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def health(self):
        return Response(status_code=200)

    @app.get("/v2/models/{name}/ready")
    def model_ready(self, name: str):
        return Response(status_code=200 if name in self.models else 404)

    @app.get("/v2/models/{name}")
    def metadata(self, name: str):
        model = self.models.get(name)
        if model is None:
            return JSONResponse({"error": f"unknown model {name}"}, status_code=404)
        return JSONResponse(model.metadata())

    @app.post("/v2/models/{name}/infer")
    async def infer(self, name: str, request: Request):
        model = self.models.get(name)
        if model is None:
            return JSONResponse({"error": f"unknown model {name}"}, status_code=404)
        try:
            return JSONResponse(model.infer(await request.json()))
        except (BadRequest, ValueError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)


def main():
    port, replicas, temp_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        _temp_dir=temp_dir,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(V2Onnx.options(num_replicas=replicas).bind(), route_prefix="/")
        print(f"ray serve ready on 127.0.0.1:{port}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
