"""torch.nn references of torchvision's model architectures, for the parity tests.

torchvision cannot be imported on the test machines (its wheel needs libtorch_cuda), so the
tests compare the lux models with these plain ``torch.nn`` modules, which depend on torch
only and have torchvision's module tree, so their ``state_dict()`` names and shapes are
torchvision's.
"""
