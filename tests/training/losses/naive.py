"""Scalar building blocks for the loop-by-loop reference losses in these tests.

Vectors are 1-D tensors or lists of 0-d tensors; everything is computed one
scalar at a time so that autograd on the references is independent of the
vectorised code under test.
"""

import torch


def dot(u, v):
    return sum(u[k] * v[k] for k in range(len(u)))


def unit(v):
    length = torch.sqrt(dot(v, v))
    return [v[k] / length for k in range(len(v))]


def rows(matrix):
    return [matrix[i] for i in range(matrix.shape[0])]


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))
