"""Helpers for testing salad-ray from a checkout, kept out of the test folders (as
``transformers.testing_utils`` and ``ray.cluster_utils`` are): processes of servers and drivers
(ports, readiness, stopping), OpenAI audio message parts, the README's shell commands and its laptop
job, and the kustomize overlays under k8s/ rendered without kustomize. Nothing in the product
imports them.
"""
