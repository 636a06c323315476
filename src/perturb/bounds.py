"""Bound propagation on computational graphs: IBP, CROWN and CROWN-IBP (Xu et al., 2020).

A network is a list of :class:`Node` objects in topological order; each node names its parents, so a skip
connection is a node with two parents. The same list serves to evaluate the network (:func:`evaluate`) and to
bound it over an input box ``[x_lower, x_upper]``:

- :func:`ibp_bounds` / :func:`ibp_margin_lower`: interval bound propagation, one forward sweep of boxes;
- :func:`backward_lower_bound`: CROWN's backward pass of one linear lower bound, with one local rule per
  operation (linear, ReLU, add) and the closed-form minimum over the box at the input;
- :func:`preactivation_bounds`: the interval ``[l, u]`` of the input of every ReLU, either by a backward pass
  started at that node (CROWN) or by IBP (CROWN-IBP);
- :func:`crown_margin_lower` / :func:`margin_lower_bound`: lower bounds of the classification margins.

Shapes: inputs are ``(batch, features)``; a specification ``spec`` is ``(batch, m, width of the bounded node)``
and a lower bound of ``spec @ h`` is ``(batch, m)``. Every function is differentiable in the weights, so a bound
can sit inside a training loss. Comments ``Eq. (eq-...)`` refer to the equations of the chapter that derives
each rule, where the source of every function is shown next to its equation.

Used by: crown-bound-propagation (derives and displays this module; the bounds, the exact-MILP ladder, certified
training, a residual network), local-lipschitz-bounds (forward pre-activation bounds for the Jacobian graph).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import input_box


class Node(NamedTuple):
    """One operation of a computational graph; ``parents`` name the nodes it reads."""
    name: str
    op: str                                 # "input", "linear", "relu" or "add"
    parents: tuple[str, ...] = ()
    weight: torch.Tensor | None = None      # linear nodes: y = x @ weight.T + bias
    bias: torch.Tensor | None = None


def graph_of(model: nn.Module) -> list[Node]:
    """The model's graph in topological order; the last node is the output. Plain Linear/ReLU stacks are read
    layer by layer; other models describe themselves through a ``graph()`` method."""
    if hasattr(model, "graph"):
        return model.graph()
    graph = [Node("x", "input")]
    for i, layer in enumerate(model):
        parent = (graph[-1].name,)
        if isinstance(layer, nn.Linear):
            graph.append(Node(f"linear{i}", "linear", parent, layer.weight, layer.bias))
        elif isinstance(layer, nn.ReLU):
            graph.append(Node(f"relu{i}", "relu", parent))
        else:
            raise TypeError(f"no bound rule for {type(layer).__name__}")
    return graph


def evaluate(graph: list[Node], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The value of every node at input ``x`` (batch, features)."""
    values = {}
    for node in graph:
        inputs = [values[p] for p in node.parents]
        if node.op == "input":
            values[node.name] = x
        elif node.op == "linear":
            values[node.name] = inputs[0] @ node.weight.T + node.bias
        elif node.op == "relu":
            values[node.name] = inputs[0].clamp(min=0)
        elif node.op == "add":
            values[node.name] = sum(inputs)
        else:
            raise ValueError(f"unknown op {node.op!r}")
    return values


def margin_spec(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    # Eq. (eq-spec): rows e_y - e_j for every j != y, one (K-1) x K matrix per example
    eye = torch.eye(num_classes, device=y.device)
    rows = eye[y][:, None, :] - eye[None, :, :]                 # (batch, K, K); row j is e_y - e_j
    others = ~F.one_hot(y, num_classes).bool()
    return rows[others].view(len(y), num_classes - 1, num_classes)


def interval_linear(weight, bias, lower, upper):
    # Eq. (eq-ibp-linear): the image of a box under an affine map, through its centre and radius
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    mid = centre @ weight.T + bias
    spread = radius @ weight.abs().T
    return mid - spread, mid + spread


def ibp_bounds(graph, x_lower, x_upper):
    """Interval bound propagation: a (lower, upper) pair for every node, in one forward sweep."""
    bounds = {}
    for node in graph:
        parents = [bounds[p] for p in node.parents]
        if node.op == "input":
            bounds[node.name] = (x_lower, x_upper)
        elif node.op == "linear":
            bounds[node.name] = interval_linear(node.weight, node.bias, *parents[0])
        elif node.op == "relu":
            # Eq. (eq-ibp-relu): ReLU is monotone, so clamping both ends is exact for a box
            bounds[node.name] = (parents[0][0].clamp(min=0), parents[0][1].clamp(min=0))
        elif node.op == "add":
            bounds[node.name] = (sum(b[0] for b in parents), sum(b[1] for b in parents))
        else:
            raise ValueError(f"unknown op {node.op!r}")
    return bounds


def ibp_margin_lower(graph, x_lower, x_upper, spec):
    """IBP lower bound of spec @ f(x) over the box, with spec folded into the last linear node."""
    head = graph[-1]
    lower, upper = ibp_bounds(graph[:-1], x_lower, x_upper)[head.parents[0]]
    weight, bias = spec @ head.weight, spec @ head.bias           # (batch, m, n) and (batch, m)
    # Eq. (eq-ibp-linear) with the folded layer, keeping only the lower end
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    return (weight @ centre[..., None] - weight.abs() @ radius[..., None]).squeeze(-1) + bias


def relu_relaxation(lower, upper, lower_slope=None):
    """Eq. (eq-relax): slopes of the lower and upper lines and the upper intercept, per neuron.

    ``lower_slope`` (values in [0, 1]) replaces CROWN's adaptive choice for unstable neurons, e.g. when the
    slopes are optimised.
    """
    active = (lower >= 0).to(lower.dtype)
    unstable = (lower < 0) & (upper > 0)
    width = (upper - lower).clamp(min=1e-12)
    upper_slope = torch.where(unstable, upper / width, active)
    upper_intercept = torch.where(unstable, -lower * upper / width, torch.zeros_like(lower))
    adaptive = (upper > -lower).to(lower.dtype)
    chosen = adaptive if lower_slope is None else lower_slope
    lower_slope = torch.where(unstable, chosen, active)
    return lower_slope, upper_slope, upper_intercept


def backward_lower_bound(graph, target, spec, x_lower, x_upper, preactivation, lower_slopes=None):
    """Lower bound of spec @ h_target over the input box, by Eqs. (eq-backward) and (eq-concretize).

    ``spec`` has shape (batch, m, width of target); ``preactivation`` maps the parent of every ReLU that lies
    between the input and ``target`` to its (lower, upper) bounds; ``lower_slopes`` optionally maps ReLU node
    names to the lower slopes of their unstable neurons (see :func:`relu_relaxation`).
    """
    coefficients = {target: spec}
    bias = spec.new_zeros(spec.shape[:2])

    def send(parent, coefficient):                       # the "+=" of Eq. (eq-backward)
        coefficients[parent] = coefficients[parent] + coefficient if parent in coefficients else coefficient

    for node in reversed(graph):                         # reverse topological order
        lam = coefficients.pop(node.name, None)
        if lam is None:                                  # not an ancestor of target
            continue
        if node.op == "input":
            # Eq. (eq-concretize): the best corner of the box, coordinate by coordinate
            bias = bias + (lam.clamp(min=0) @ x_lower[..., None] + lam.clamp(max=0) @ x_upper[..., None]).squeeze(-1)
        elif node.op == "linear":
            bias = bias + lam @ node.bias
            send(node.parents[0], lam @ node.weight)
        elif node.op == "relu":
            lower, upper = preactivation[node.parents[0]]
            slope = None if lower_slopes is None else lower_slopes.get(node.name)
            s_lower, s_upper, t_upper = relu_relaxation(lower, upper, slope)
            lam_pos, lam_neg = lam.clamp(min=0), lam.clamp(max=0)
            bias = bias + (lam_neg * t_upper[:, None, :]).sum(-1)
            send(node.parents[0], lam_pos * s_lower[:, None, :] + lam_neg * s_upper[:, None, :])
        elif node.op == "add":
            for parent in node.parents:
                send(parent, lam)
        else:
            raise ValueError(f"unknown op {node.op!r}")
    return bias


def preactivation_bounds(graph, x_lower, x_upper, intermediate="crown"):
    """Eq. (eq-intermediate): (lower, upper) for the input of every ReLU node, by CROWN or by IBP.

    Returns a dict from the name of each ReLU's parent node to its bounds, in topological order.
    """
    relu_inputs = [node.parents[0] for node in graph if node.op == "relu"]
    if intermediate == "ibp":
        interval = ibp_bounds(graph, x_lower, x_upper)
        return {name: interval[name] for name in relu_inputs}
    if intermediate != "crown":
        raise ValueError(f"intermediate must be 'crown' or 'ibp', got {intermediate!r}")
    widths = {name: value.shape[-1] for name, value in evaluate(graph, x_lower).items()}
    bounds = {}
    for name in relu_inputs:                             # topological order: earlier bounds are ready
        eye = torch.eye(widths[name], dtype=x_lower.dtype, device=x_lower.device)
        both_signs = torch.cat([eye, -eye]).expand(len(x_lower), -1, -1)
        lower = backward_lower_bound(graph, name, both_signs, x_lower, x_upper, bounds)
        bounds[name] = (lower[:, :widths[name]], -lower[:, widths[name]:])
    return bounds


def crown_margin_lower(graph, x_lower, x_upper, spec, intermediate="crown", lower_slopes=None):
    """Lower bound of spec @ f(x) over the box: CROWN (intermediate='crown') or CROWN-IBP ('ibp')."""
    preactivation = preactivation_bounds(graph, x_lower, x_upper, intermediate)
    return backward_lower_bound(graph, graph[-1].name, spec, x_lower, x_upper, preactivation, lower_slopes)


def margin_lower_bound(model, x, y, eps, method, num_classes=10):
    """Lower bounds of the K-1 margins of ``model`` at each (x, y) over the eps-box clipped to [0, 1].

    ``method`` is "ibp", "crown" or "crown-ibp".
    """
    if method not in ("ibp", "crown", "crown-ibp"):
        raise ValueError(f"method must be 'ibp', 'crown' or 'crown-ibp', got {method!r}")
    graph = graph_of(model)
    x_lower, x_upper = input_box(x, eps)
    spec = margin_spec(y, num_classes).to(x.dtype)
    if method == "ibp":
        return ibp_margin_lower(graph, x_lower, x_upper, spec)
    return crown_margin_lower(graph, x_lower, x_upper, spec, "ibp" if method == "crown-ibp" else "crown")
