"""A plain PyTorch VAE, written the way the common examples write it, trained like
``vae-course train``: 784-400-L, ReLU, Bernoulli decoder (summed binary cross-entropy),
nn.Linear's default initialization, torch.optim.Adam 1e-3, batch 128, 50 epochs, on the
embedded MNIST split. It shares no code with the package's models, so its test negative
ELBO is an independent reference for the figures in the README.

    python benchmarks/plain_torch_reference.py --latent-dim 20 --seeds 0 1
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from vae_from_scratch.data import load_mnist


class PlainVAE(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.fc1, self.fc_mu, self.fc_log_var = (
            nn.Linear(784, 400),
            nn.Linear(400, latent_dim),
            nn.Linear(400, latent_dim),
        )
        self.fc3, self.fc4 = nn.Linear(latent_dim, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, log_var = self.fc_mu(h), self.fc_log_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        return self.fc4(F.relu(self.fc3(z))), mu, log_var


def negative_elbo_sum(logits, x, mu, log_var):
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return recon - 0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp())


def run(latent_dim, seed, epochs=50, batch_size=128):
    torch.manual_seed(seed)
    ds = load_mnist()
    x_train, x_test = torch.from_numpy(ds.x_train), torch.from_numpy(ds.x_test)
    model = PlainVAE(latent_dim)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for start in range(0, len(x_train), batch_size):
            x = x_train[order[start : start + batch_size]]
            logits, mu, log_var = model(x)
            loss = negative_elbo_sum(logits, x, mu, log_var)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits, mu, log_var = model(x_test)
        return negative_elbo_sum(logits, x_test, mu, log_var).item() / len(x_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    for seed in args.seeds:
        nelbo = run(args.latent_dim, seed, args.epochs)
        print(f"plain PyTorch, latent {args.latent_dim}, seed {seed}: test -ELBO {nelbo:.2f}")


if __name__ == "__main__":
    main()
