import torch

from bayesdl import BNN, MeanFieldGuide, fit, predict
from bayesdl.data import load_uci
from bayesdl.likelihoods import GaussianLikelihood
from bayesdl.metrics import regression_metrics
from bayesdl.priors import LayerwiseNormalPrior

data = load_uci("yacht")  # standardised train/test tensors, read offline
net = torch.nn.Sequential(torch.nn.Linear(6, 50), torch.nn.ReLU(), torch.nn.Linear(50, 1))
likelihood = GaussianLikelihood(data.num_train, scale=0.1, learn_scale=True)
bnn = BNN(net, LayerwiseNormalPrior("radford"), likelihood)  # weights become sample sites
guide = MeanFieldGuide(bnn)
fit(bnn, guide, (data.x_train, data.y_train), num_steps=2000, batch_size=64, reparam="local")
pred = predict(bnn, guide, data.x_test, num_samples=500)  # one vectorised pass
print(regression_metrics(pred.mean, pred.variance, data.y_test))
