"""A Python HTTP handler (componentize-py), served behind the TensorWasm gateway."""

from wit_world import exports
from wit_world.imports.types import (
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
    Method_Get,
)
from componentize_py_types import Ok


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        method = "GET" if isinstance(request.method(), Method_Get) else "other"
        text = f"Hello from Python! {method} {path}\n".encode()
        headers = Fields.from_list([("content-type", b"text/plain"),
                                    ("content-length", str(len(text)).encode())])
        response = OutgoingResponse(headers)
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        stream.blocking_write_and_flush(text)
        stream.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
