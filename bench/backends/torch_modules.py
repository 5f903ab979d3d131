"""The suite's networks as PyTorch users write them: nn.Modules for the idiomatic
``torch`` backends (bench/backends/torch_backend.py), each with the loss its
write-up uses."""
import torch
import torch.nn.functional as F
from torch import nn

from ...models.networks import CLASSES, IMAGE_PIXELS


# -- the networks as nn.Modules ------------------------------------------------------
# ``param_names`` maps the suite's canonical names to the module's parameters.
# nn.Linear stores its weight (out, in), the suite (in, out): 2-D weights are
# transposed on the way in and out.

class SoftmaxRegression(nn.Module):
    param_names = {"w": "fc.weight", "b": "fc.bias"}

    def __init__(self, network):
        super().__init__()
        self.fc = nn.Linear(IMAGE_PIXELS, CLASSES)

    def forward(self, x, dropout_mask=None):
        return self.fc(x)


class TwoLayerNet(nn.Module):
    """784 -> hidden -> 10; the subclasses choose the activations."""
    param_names = {"w1": "fc1.weight", "b1": "fc1.bias", "w2": "fc2.weight", "b2": "fc2.bias"}

    def __init__(self, network):
        super().__init__()
        self.fc1 = nn.Linear(IMAGE_PIXELS, network.hidden)
        self.fc2 = nn.Linear(network.hidden, CLASSES)


class NielsenNet(TwoLayerNet):
    def forward(self, x, dropout_mask=None):
        return torch.sigmoid(self.fc2(torch.sigmoid(self.fc1(x))))


class MLPNet(TwoLayerNet):
    def forward(self, x, dropout_mask=None):
        return self.fc2(F.relu(self.fc1(x)))


class ConvNet(nn.Module):
    param_names = {"c1w": "conv1.weight", "c1b": "conv1.bias", "c2w": "conv2.weight",
                   "c2b": "conv2.bias", "f1w": "fc1.weight", "f1b": "fc1.bias",
                   "f2w": "fc2.weight", "f2b": "fc2.bias"}
    dropout_features = 1024  # fc1's output, where the dropout mask applies

    def __init__(self, network):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(1024, self.dropout_features)
        self.fc2 = nn.Linear(self.dropout_features, CLASSES)

    def forward(self, x, dropout_mask=None):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        if dropout_mask is not None:
            # The suite's seeded mask (already scaled by 1/(1-rate)) instead of
            # nn.Dropout's own random draw, so every backend drops the same units.
            x = x * dropout_mask
        return self.fc2(x)


def quadratic_cost(a, onehot):
    """Mean over the batch of ½‖a - y‖² (Nielsen's cost, as NumpyOps.quadratic_loss)."""
    return 0.5 * (a - onehot).square().sum() / a.shape[0]


# network name -> (module, loss)
MODULES = {"linear": (SoftmaxRegression, F.cross_entropy), "nielsen": (NielsenNet, quadratic_cost),
           "mlp": (MLPNet, F.cross_entropy), "cnn": (ConvNet, F.cross_entropy)}
