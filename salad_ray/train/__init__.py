"""Distillation training on Ray Train.

schedule.py  the warmup-stable-decay learning rate        mixture.py  the deterministic data stream
data.py      the stream on Ray Data, one slice per rank   state.py    checkpoints: save and exact resume
flops.py     model FLOPs and the measured matmul peak     loop.py     the per-worker training loop
launcher.py  the TorchTrainer of a stage
"""
