"""Scale the prior and guide terms of latent sites: KL annealing and tempered posteriors."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

from bayesdl._validation import check_positive


class KLScaleMessenger(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``scale``.

    Applied to both model and guide, the ELBO becomes ``E_q[log p(y|w)] - scale * KL(q || p)``:
    ``scale < 1`` during warm-up gives KL annealing; a fixed ``scale = T`` gives the tempered
    ("cold posterior" for ``T < 1``) objective. The scale can be changed between steps by
    setting :attr:`scale`.

    Args:
        scale: a positive weight of the KL term.

    Example:
        >>> from bayesdl.handlers import kl_scale
        >>> with kl_scale(scale=0.1):
        ...     pass
    """

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    @property
    def scale(self) -> float:
        """The weight of the KL term (``> 0``)."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        check_positive(value, "scale")  # also rejects NaN
        self._scale = float(value)

    def _pyro_sample(self, msg) -> None:
        if not msg["is_observed"]:
            msg["scale"] = self._scale * msg["scale"]
