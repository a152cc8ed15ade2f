"""The Ray Serve app: the gateway (OpenAI-compatible API, /v1/query, /v1/search, websocket) over one
answer flow, the retriever, the router and its generators (vLLM, llama.cpp, extractive).

It opens the CURRENT version of an index through `indexes.reader`; it never imports `pipelines` or
`evaluation` (tests/unit/test_layers.py).
"""
