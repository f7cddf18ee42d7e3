"""The teacher: the original text LLM, answering per-position top-k next-token log-probs.

protocol.py defines the request and the answer; backends.py computes them (transformers, vLLM);
deployment.py serves them on Ray Serve; client.py is what the rest of the system calls.
"""
