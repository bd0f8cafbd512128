"""The StraightLine paper's local server: Flask behind gunicorn, calling
ONNX Runtime, serving the v2 JSON endpoints `switchyard-bench peers` uses.

Run as `gunicorn --workers N --worker-class sync flask_server:app` with
PEERS_MODELS set (see v2_onnx.load_models). Each worker process loads its
own sessions when it starts (gunicorn imports the app in every worker).
"""

from flask import Flask, Response, jsonify, request

from v2_onnx import BadRequest, error_body, load_models

app = Flask(__name__)
MODELS = load_models()


def _not_found(name):
    return Response(error_body(f"unknown model {name}"), status=404, mimetype="application/json")


@app.get("/v2/health/live")
@app.get("/v2/health/ready")
def health():
    return Response(status=200)


@app.get("/v2/models/<name>")
def metadata(name):
    model = MODELS.get(name)
    return jsonify(model.metadata()) if model else _not_found(name)


@app.get("/v2/models/<name>/ready")
def model_ready(name):
    return Response(status=200) if name in MODELS else _not_found(name)


@app.post("/v2/models/<name>/infer")
def infer(name):
    model = MODELS.get(name)
    if model is None:
        return _not_found(name)
    body = request.get_json(silent=True)
    try:
        return jsonify(model.infer(body))
    except BadRequest as error:
        return Response(error_body(str(error)), status=400, mimetype="application/json")
