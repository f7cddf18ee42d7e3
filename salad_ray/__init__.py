"""salad-ray: SALAD (cross-modal distillation + active selection of synthetic speech) on Ray.

Importing the package is light; the heavy pieces (torch models, Ray, vLLM, Kokoro) are imported by
the modules that need them.
"""

__version__ = "0.1.0"
