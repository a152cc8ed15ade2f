"""Ray Serve app: retriever, generators and the OpenAI-compatible gateway (not built yet).

It opens the CURRENT version of an index through `indexes.reader`; it never imports `pipelines`.
"""
