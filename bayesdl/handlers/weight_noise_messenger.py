"""Shared machinery of ``local_reparam`` and ``flipout``: noise injected at the layer outputs."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from bayesdl.nn.vectorized_forward import particle_batch_shape

_LAYERS = (nn.Linear, nn.Conv2d)


def _normal_loc_scale(fn: dist.Distribution, shape: torch.Size) -> tuple[Tensor, Tensor] | None:
    """``(loc, scale)`` of a (possibly Independent / expanded) Normal, without particle dims.

    Returns ``None`` when ``fn`` is not a Normal or its parameters differ across particles.
    """
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    if not isinstance(fn, torch.distributions.Normal):
        return None
    out = []
    for t in (fn.loc, fn.scale):
        t = t.expand(fn.batch_shape)
        lead = t.dim() - len(shape)
        if lead < 0 or tuple(t.shape[lead:]) != tuple(shape):
            return None
        for _ in range(lead):
            if t.shape[0] != 1 and t.stride(0) != 0:
                return None
            t = t[0]
        out.append(t)
    return out[0], out[1]


class _LayerNoiseMode(TorchFunctionMode):
    """Within its context, ``F.linear`` / ``F.conv2d`` calls whose weight is one of the given
    Gaussian means compute the noisy output of a Gaussian weight instead."""

    def __init__(self, scales: list[tuple[Tensor, Tensor]], noisy_linear, noisy_conv2d):
        super().__init__()
        self._scales = scales
        self._noisy_linear = noisy_linear
        self._noisy_conv2d = noisy_conv2d

    def _scale_of(self, weight) -> Tensor | None:
        for loc, scale in self._scales:
            if weight is loc:
                return scale
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = {} if kwargs is None else kwargs
        if func is F.linear or func is F.conv2d:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            scale = self._scale_of(weight)
            if scale is not None:
                if func is F.linear:
                    return self._noisy_linear(*args, scale=scale, **kwargs)
                return self._noisy_conv2d(*args, scale=scale, **kwargs)
        return func(*args, **kwargs)


class WeightNoiseMessenger(Messenger):
    """Base of messengers that replace Gaussian weight sampling of ``nn.Linear`` / ``nn.Conv2d``
    layers of a :class:`~bayesdl.nn.BNN` by noise at the layer's output.

    It records, per sample site, the distribution that produced the current value (the
    guide's, since the model replays the guide's value), and when the BNN's forward op runs it
    evaluates the network with those layers' weights set to the Gaussian means; the layer calls
    are intercepted by a :class:`torch.overrides.TorchFunctionMode` active only inside the
    forward op, so nothing is patched outside it. Weights whose distribution is not Normal, or
    whose parameters vary across particles, are sampled as usual. Wrap the whole inference step
    (guide and model), e.g. ``with local_reparam(): loss = elbo.differentiable_loss(...)``:
    a weight is handled only when the handler saw both the guide draw it and the model replay
    it; under the model alone (or the prior predictive) weights are sampled as usual.
    """

    def __init__(self):
        super().__init__()
        # site name -> (value, distribution that drew it, confirmed by a replaying model site)
        self._recent: dict[str, tuple[Tensor, dist.Distribution, bool]] = {}
        #: number of forward ops in which at least one layer was handled (for diagnostics)
        self.num_engaged = 0
        #: number of forward ops seen
        self.num_forward = 0

    def __exit__(self, *args, **kwargs):
        self._recent.clear()  # drop the samples (and their graphs) of this evaluation
        return super().__exit__(*args, **kwargs)

    # subclasses implement these two with signatures of F.linear / F.conv2d plus ``scale=``
    def noisy_linear(self, x, weight, bias=None, *, scale):
        raise NotImplementedError

    def noisy_conv2d(
        self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, scale
    ):
        raise NotImplementedError

    def _pyro_post_sample(self, msg) -> None:
        name = msg["name"]
        if msg["is_observed"] or name is None:
            return
        previous = self._recent.get(name)
        if previous is not None and previous[0] is msg["value"]:
            # the model replaying the guide's value: the guide's distribution drew it
            self._recent[name] = (previous[0], previous[1], True)
            return
        # a first sighting: trusted only once a replaying site confirms it, so that a handler
        # around the model alone (whose sites carry the prior, not the guide) never uses it
        self._recent[name] = (msg["value"], msg["fn"], False)

    def _pyro_bnn_forward(self, msg) -> None:
        if msg["done"]:
            return
        bnn, params, x = msg["args"]
        self.num_forward += 1
        shapes = bnn.param_shapes
        gaussian: dict[str, tuple[Tensor, Tensor]] = {}
        for name, value in params.items():
            prefix, _, local = name.rpartition(".")
            if local != "weight" or not isinstance(bnn.net.get_submodule(prefix), _LAYERS):
                continue
            record = self._recent.get(name)
            if record is None or record[0] is not value or not record[2]:
                continue
            loc_scale = _normal_loc_scale(record[1], shapes[name])
            if loc_scale is not None:
                gaussian[name] = loc_scale
        if not gaussian:
            return
        self.num_engaged += 1
        batch = particle_batch_shape(params, shapes)
        rest = {n: v for n, v in params.items() if n not in gaussian}
        locs = {n: loc for n, (loc, _) in gaussian.items()}
        mode = _LayerNoiseMode(list(gaussian.values()), self.noisy_linear, self.noisy_conv2d)
        with mode:
            msg["value"] = bnn.forward_with(rest, x, unbatched=locs, batch_shape=batch)
        msg["done"] = True


def rademacher_like(t: Tensor, shape: torch.Size | tuple[int, ...] | None = None) -> Tensor:
    """Independent random signs (+1 / -1) of ``shape`` (default ``t.shape``), dtype of ``t``."""
    shape = t.shape if shape is None else shape
    return torch.bernoulli(t.new_full(shape, 0.5)) * 2 - 1
