"""``edgejudge serve``: the judge as a shared HTTP service (FastAPI on uvicorn) around one loaded ``Judge``.

``worker`` owns the queue between the clients and the judge (bounded, coalescing same-image requests into
one parallel-sequence group, cancellation, drain). The HTTP layer (the app, its schemas, limits, auth and
metrics) is in the other modules of this package; FastAPI, Starlette, pydantic, uvicorn and
prometheus_client are imported only here.
"""
